package agent

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/typespb"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestNetworkRPCs runs the network RPCs on a veth pair in a named network
// namespace that the test creates and deletes; the calls run on a thread
// switched into it.
func TestNetworkRPCs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	name := fmt.Sprintf("kgagent-%d", os.Getpid())
	ns, err := netns.NewNamed(name)
	if err != nil {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("restore netns: %v", err)
		}
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns: %v", err)
		}
	}()
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tap0_kata"}, PeerName: "peer0"}); err != nil {
		t.Skipf("cannot create a veth pair: %v", err)
	}
	l, err := netlink.LinkByName("tap0_kata")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := newGuestAgent(t)
	ctx := context.Background()
	ifc, err := a.UpdateInterface(ctx, &agentpb.UpdateInterfaceRequest{Interface: &typespb.Interface{
		HwAddr: l.Attrs().HardwareAddr.String(), Name: "eth0", Mtu: 1450,
		IPAddresses: []*typespb.IPAddress{{Family: typespb.IPFamily_v4, Address: "10.88.0.5", Mask: "16"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("UpdateInterface returned %v", ifc)
	out, err := hostCombined("ip", "-n", name, "addr", "show", "eth0")
	if err != nil {
		t.Fatalf("ip addr: %v %s", err, out)
	}
	t.Logf("ip -n %s addr show eth0:\n%s", name, out)
	if !strings.Contains(string(out), "inet 10.88.0.5/16") || !strings.Contains(string(out), "mtu 1450") {
		t.Errorf("ip addr does not show the update")
	}
	rs, err := a.UpdateRoutes(ctx, &agentpb.UpdateRoutesRequest{Routes: &agentpb.Routes{Routes: []*typespb.Route{
		{Gateway: "10.88.0.1", Device: "eth0"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rs.GetRoutes() {
		found = found || (r.GetDest() == "" && r.GetGateway() == "10.88.0.1" && r.GetDevice() == "eth0")
	}
	if !found {
		t.Errorf("default route missing from %v", rs.GetRoutes())
	}
	list, err := a.ListInterfaces(ctx, &agentpb.ListInterfacesRequest{})
	if err != nil || len(list.GetInterfaces()) < 3 {
		t.Errorf("ListInterfaces: %v %v", list, err)
	}
	_, err = a.UpdateInterface(ctx, &agentpb.UpdateInterfaceRequest{Interface: &typespb.Interface{HwAddr: "02:00:00:00:00:01"}})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unknown MAC: %v, want NotFound", err)
	}
	_, err = a.UpdateRoutes(ctx, &agentpb.UpdateRoutesRequest{Routes: &agentpb.Routes{Routes: []*typespb.Route{{Dest: "x/y", Device: "eth0"}}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad route: %v, want InvalidArgument", err)
	}
}
