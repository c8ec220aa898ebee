package network

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/kguest/kguest/protocols/typespb"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testNS creates a named network namespace (so `ip -n` can look into it)
// with a veth pair, and removes it at the end. The calling goroutine stays
// on a thread switched into the namespace until cleanup.
func testNS(t *testing.T) (name string, m *Manager, h *netlink.Handle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	name = fmt.Sprintf("kgnet-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	ns, err := netns.NewNamed(name)
	if err != nil {
		netns.Set(orig)
		orig.Close()
		runtime.UnlockOSThread()
		t.Skipf("cannot create a network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("restore netns: %v", err)
		}
		orig.Close()
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
		runtime.UnlockOSThread()
	})
	h, err = netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kgv0"}, PeerName: "kgv1"}
	if err := h.LinkAdd(veth); err != nil {
		t.Skipf("cannot create a veth pair: %v", err)
	}
	return name, New(h), h
}

func TestUpdateInterface(t *testing.T) {
	ns, m, h := testNS(t)
	l, err := h.LinkByName("kgv0")
	if err != nil {
		t.Fatal(err)
	}
	mac := l.Attrs().HardwareAddr.String()
	got, err := m.UpdateInterface(&typespb.Interface{
		HwAddr: strings.ToUpper(mac), Name: "eth7", Mtu: 1400,
		IPAddresses: []*typespb.IPAddress{
			{Family: typespb.IPFamily_v4, Address: "10.20.30.40", Mask: "24"},
			{Family: typespb.IPFamily_v4, Address: "10.99.0.1", Mask: "255.255.0.0"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "eth7" || got.Mtu != 1400 || got.HwAddr != mac {
		t.Errorf("returned %v", got)
	}
	out, err := exec.Command("ip", "-n", ns, "addr", "show", "dev", "eth7").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr: %v: %s", err, out)
	}
	for _, want := range []string{"inet 10.20.30.40/24", "inet 10.99.0.1/16", "mtu 1400"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ip addr shows no %q:\n%s", want, out)
		}
	}
	// A second update replaces the addresses.
	if _, err := m.UpdateInterface(&typespb.Interface{HwAddr: mac, Name: "eth7",
		IPAddresses: []*typespb.IPAddress{{Address: "192.168.5.5", Mask: "30"}}}); err != nil {
		t.Fatal(err)
	}
	list, err := m.ListInterfaces()
	if err != nil {
		t.Fatal(err)
	}
	var found *typespb.Interface
	for _, i := range list {
		if i.Name == "eth7" {
			found = i
		}
	}
	if found == nil {
		t.Fatalf("eth7 not listed: %v", list)
	}
	var v4 []string
	for _, a := range found.IPAddresses {
		if a.Family == typespb.IPFamily_v4 {
			v4 = append(v4, a.Address+"/"+a.Mask)
		}
	}
	if strings.Join(v4, ",") != "192.168.5.5/30" {
		t.Errorf("addresses after second update: %v", v4)
	}

	for _, bad := range []*typespb.Interface{
		{HwAddr: "02:00:00:00:00:99"},
		{HwAddr: mac, IPAddresses: []*typespb.IPAddress{{Address: "10.0.0.300", Mask: "24"}}},
		{HwAddr: mac, IPAddresses: []*typespb.IPAddress{{Address: "10.0.0.3", Mask: "33"}}},
	} {
		_, err := m.UpdateInterface(bad)
		if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
			t.Errorf("UpdateInterface(%v) = %v, want not-found or invalid", bad, err)
		}
	}
}

func TestUpdateRoutesAndNeighbors(t *testing.T) {
	ns, m, _ := testNS(t)
	if _, err := m.UpdateInterface(&typespb.Interface{Device: "kgv0", Name: "kgv0",
		IPAddresses: []*typespb.IPAddress{{Address: "172.16.0.2", Mask: "24"}}}); err != nil {
		t.Fatal(err)
	}
	routes := []*typespb.Route{
		// Given out of order: the gateway is only reachable once the
		// link-scope route exists.
		{Dest: "", Gateway: "10.1.0.1", Device: "kgv0"},
		{Dest: "10.1.0.0/24", Device: "kgv0", Scope: uint32(netlink.SCOPE_LINK)},
		{Dest: "192.168.77.0/24", Gateway: "172.16.0.1", Device: "kgv0"},
	}
	got, err := m.UpdateRoutes(routes)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "-n", ns, "route").CombinedOutput()
	for _, want := range []string{"default via 10.1.0.1 dev kgv0", "10.1.0.0/24 dev kgv0 scope link",
		"192.168.77.0/24 via 172.16.0.1 dev kgv0", "172.16.0.0/24 dev kgv0 proto kernel"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ip route lacks %q:\n%s", want, out)
		}
	}
	if len(got) < 4 {
		t.Errorf("ListRoutes after update: %v", got)
	}
	// Replacing the table drops what is no longer asked for.
	if _, err := m.UpdateRoutes(routes[1:2]); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command("ip", "-n", ns, "route").CombinedOutput()
	if strings.Contains(string(out), "default") || strings.Contains(string(out), "192.168.77.0") {
		t.Errorf("old routes survived:\n%s", out)
	}
	if _, err := m.UpdateRoutes([]*typespb.Route{{Dest: "bad", Device: "kgv0"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad route: %v", err)
	}

	err = m.AddARPNeighbors([]*typespb.ARPNeighbor{{
		ToIPAddress: &typespb.IPAddress{Address: "172.16.0.9"}, Device: "kgv0", Lladdr: "02:42:ac:10:00:09",
	}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command("ip", "-n", ns, "neigh", "show", "dev", "kgv0").CombinedOutput()
	if !strings.Contains(string(out), "172.16.0.9 lladdr 02:42:ac:10:00:09 PERMANENT") {
		t.Errorf("neighbour not set:\n%s", out)
	}
}

func TestIPTables(t *testing.T) {
	testNS(t)
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		_, err := GetIPTables(context.Background(), false)
		if !errors.Is(err, ErrNoTool) {
			t.Fatalf("without iptables: %v, want ErrNoTool", err)
		}
		t.Skip("iptables not installed: checked the missing-tool error only")
	}
	// The tools run on this locked thread, so inside the test namespace.
	rules := "*filter\n:KGTEST - [0:0]\n-A KGTEST -s 10.9.9.9/32 -j DROP\nCOMMIT\n"
	if out, err := SetIPTables(context.Background(), false, []byte(rules)); err != nil {
		t.Fatalf("restore: %v (%s)", err, out)
	}
	got, err := GetIPTables(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "-A KGTEST -s 10.9.9.9/32 -j DROP") {
		t.Errorf("saved rules lack ours:\n%s", got)
	}
	if _, err := SetIPTables(context.Background(), false, []byte("garbage\n")); err == nil {
		t.Error("garbage accepted")
	}
}
