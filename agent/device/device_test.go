package device

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A uevent as the kernel sent it for a hot-plugged virtio-blk disk.
var recordedBlk = []byte("add@/devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio3/block/vda\x00" +
	"ACTION=add\x00DEVPATH=/devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio3/block/vda\x00" +
	"SUBSYSTEM=block\x00MAJOR=254\x00MINOR=0\x00DEVNAME=vda\x00DEVTYPE=disk\x00DISKSEQ=9\x00SEQNUM=1772\x00")

func TestParseUevent(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    Uevent
		wantErr bool
	}{
		{name: "block add", in: recordedBlk, want: Uevent{Action: "add", Subsystem: "block", DevName: "vda", SeqNum: "1772",
			DevPath: "/devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio3/block/vda"}},
		{name: "header only", in: []byte("remove@/devices/virtual/net/d0\x00"), want: Uevent{Action: "remove", DevPath: "/devices/virtual/net/d0"}},
		{name: "udev", in: []byte("libudev\x00\xfe\xed"), wantErr: true},
		{name: "garbage", in: []byte("hello"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseUevent(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if u.Action != tt.want.Action || u.DevPath != tt.want.DevPath || u.Subsystem != tt.want.Subsystem ||
				u.DevName != tt.want.DevName || u.SeqNum != tt.want.SeqNum {
				t.Errorf("got %+v, want %+v", *u, tt.want)
			}
		})
	}
}

func TestParsePCIPath(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"02/00", "02.0/00.0", true},
		{"1f", "1f.0", true},
		{"03.2/01", "03.2/01.0", true},
		{"", "", false},
		{"20", "", false},
		{"02/zz", "", false},
		{"02.8", "", false},
		{"002", "", false},
	}
	for _, tt := range tests {
		p, err := ParsePCIPath(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("%q: err = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && strings.Join(p, "/") != tt.want {
			t.Errorf("%q: got %v, want %s", tt.in, p, tt.want)
		}
	}
}

// fakeWatcher is a Watcher with no socket; tests feed it with dispatch.
func fakeWatcher() *Watcher {
	return &Watcher{waits: map[*Wait]struct{}{}, done: make(chan struct{})}
}

func mkdirs(t *testing.T, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVirtioBlkPCIPresent(t *testing.T) {
	sys := t.TempDir()
	mkdirs(t, sys,
		"devices/pci0000:00/0000:00:02.0/pci_bus/0000:01",
		"devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio3/block/vdb",
		"bus/pci")
	m := NewManager(fakeWatcher(), time.Second)
	m.SysfsRoot = sys
	got, err := m.VirtioBlkPCI(context.Background(), "02/00")
	if err != nil || got != "/dev/vdb" {
		t.Fatalf("got %q, %v; want /dev/vdb", got, err)
	}
}

func TestVirtioBlkPCIHotplug(t *testing.T) {
	sys := t.TempDir()
	mkdirs(t, sys, "devices/pci0000:00/0000:00:02.0/pci_bus/0000:01", "bus/pci")
	w := fakeWatcher()
	m := NewManager(w, 5*time.Second)
	m.SysfsRoot = sys
	go func() {
		// Wait until the lookup registered, then deliver events: first a
		// partition and an unrelated disk, which must be ignored.
		for {
			w.mu.Lock()
			n := len(w.waits)
			w.mu.Unlock()
			if n > 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		base := "/devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio3/block/vda"
		w.dispatch(&Uevent{Action: "add", Subsystem: "block", DevName: "vda1", DevPath: base + "/vda1"})
		w.dispatch(&Uevent{Action: "add", Subsystem: "block", DevName: "vdz", DevPath: "/devices/pci0000:00/0000:00:03.0/virtio4/block/vdz"})
		w.dispatch(&Uevent{Action: "add", Subsystem: "block", DevName: "vda", DevPath: base})
	}()
	got, err := m.VirtioBlkPCI(context.Background(), "02/00")
	if err != nil || got != "/dev/vda" {
		t.Fatalf("got %q, %v; want /dev/vda", got, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.waits) != 0 {
		t.Errorf("%d waits left registered", len(w.waits))
	}
}

func TestLookupTimeout(t *testing.T) {
	m := NewManager(fakeWatcher(), 50*time.Millisecond)
	m.SysfsRoot = t.TempDir()
	_, err := m.SCSI(context.Background(), "0:1")
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if _, err := m.SCSI(context.Background(), "zz"); err == nil || errors.Is(err, ErrTimeout) {
		t.Fatalf("bad address: err = %v", err)
	}
}

func TestSCSIHotplug(t *testing.T) {
	w := fakeWatcher()
	m := NewManager(w, 5*time.Second)
	m.SysfsRoot = t.TempDir()
	mkdirs(t, m.SysfsRoot, "class/scsi_host/host0")
	if err := os.WriteFile(filepath.Join(m.SysfsRoot, "class/scsi_host/host0/scan"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			w.mu.Lock()
			n := len(w.waits)
			w.mu.Unlock()
			if n > 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		w.dispatch(&Uevent{Action: "add", Subsystem: "block", DevName: "sdb",
			DevPath: "/devices/pci0000:00/0000:00:03.0/virtio1/host0/target0:0:1/0:0:1:2/block/sdb"})
	}()
	got, err := m.SCSI(context.Background(), "1:2")
	if err != nil || got != "/dev/sdb" {
		t.Fatalf("got %q, %v", got, err)
	}
	scan, _ := os.ReadFile(filepath.Join(m.SysfsRoot, "class/scsi_host/host0/scan"))
	if string(scan) != "0 1 2" {
		t.Errorf("scan wrote %q, want \"0 1 2\"", scan)
	}
}

func TestUpdateSpec(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	spec := &specs.Spec{Linux: &specs.Linux{
		Devices: []specs.LinuxDevice{{Path: "/dev/xvda", Type: "b", Major: 8, Minor: 0}},
		Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
			{Allow: false, Access: "rwm"},
			{Allow: true, Type: "b", Major: i64(8), Minor: i64(0), Access: "rw"},
			{Allow: true, Type: "c", Major: i64(8), Minor: i64(0), Access: "rw"},
		}},
	}}
	err := UpdateSpec(spec, []Node{
		{ContainerPath: "/dev/xvda", Type: "b", Major: 254, Minor: 16},
		{ContainerPath: "/dev/pmem", Type: "b", Major: 259, Minor: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := spec.Linux.Devices
	if len(d) != 2 || d[0].Major != 254 || d[0].Minor != 16 || d[1].Path != "/dev/pmem" || d[1].Major != 259 {
		t.Errorf("devices = %+v", d)
	}
	r := spec.Linux.Resources.Devices
	if *r[1].Major != 254 || *r[1].Minor != 16 {
		t.Errorf("block rule not remapped: %d:%d", *r[1].Major, *r[1].Minor)
	}
	if *r[2].Major != 8 {
		t.Errorf("char rule with the same numbers was remapped")
	}
}

func TestStatNode(t *testing.T) {
	n, err := StatNode("/dev/null", "/dev/null")
	if err != nil || n.Type != "c" || n.Major != 1 || n.Minor != 3 {
		t.Fatalf("got %+v, %v", n, err)
	}
	if _, err := StatNode("/x", t.TempDir()); err == nil {
		t.Fatal("directory accepted as a device node")
	}
}

// TestWatcherNetdev sees the kernel's uevent for a veth link created in a
// fresh network namespace (net uevents go to sockets of the owning netns).
func TestWatcherNetdev(t *testing.T) {
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
	ns, err := netns.New()
	if err != nil {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("restore netns: %v", err)
		}
		ns.Close()
	}()
	w, err := NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	wt, err := w.Watch(func(u *Uevent) bool {
		return u.Action == "add" && u.Subsystem == "net" && u.Env["INTERFACE"] == "kgdummy0"
	})
	if err != nil {
		t.Fatal(err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kgdummy0"}, PeerName: "kgdummy1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Skipf("cannot create a veth pair: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := wt.Wait(ctx)
	if err != nil {
		t.Fatalf("no uevent for the dummy link: %v", err)
	}
	if !strings.HasSuffix(u.DevPath, "/net/kgdummy0") {
		t.Errorf("devpath %q", u.DevPath)
	}
}

// TestVirtioBlkPCINotLiveYet: a disk in sysfs whose node cannot be opened
// yet (ENXIO, as between the kernel's device_add and its announcement) is
// waited for until its uevent.
func TestVirtioBlkPCINotLiveYet(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a block device node")
	}
	sys, dev := t.TempDir(), t.TempDir()
	mkdirs(t, sys,
		"devices/pci0000:00/0000:00:02.0/pci_bus/0000:01",
		"devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio3/block/vdb",
		"bus/pci")
	// blkext's last minor: no disk has it, so open gives ENXIO.
	if err := unix.Mknod(filepath.Join(dev, "vdb"), unix.S_IFBLK|0o600, int(unix.Mkdev(259, 1<<20-1))); err != nil {
		t.Skipf("mknod: %v", err)
	}
	if _, err := os.Open(filepath.Join(dev, "vdb")); !errors.Is(err, unix.ENXIO) {
		t.Skipf("open of an unused block device gives %v here, not ENXIO", err)
	}
	w := fakeWatcher()
	m := NewManager(w, 10*time.Second)
	m.SysfsRoot, m.DevRoot = sys, dev
	type result struct {
		dev string
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := m.VirtioBlkPCI(context.Background(), "02/00")
		done <- result{d, err}
	}()
	for registered := false; !registered; {
		select {
		case r := <-done:
			t.Fatalf("returned %q, %v before the disk was announced", r.dev, r.err)
		case <-time.After(time.Millisecond):
		}
		w.mu.Lock()
		registered = len(w.waits) > 0
		w.mu.Unlock()
	}
	select {
	case r := <-done:
		t.Fatalf("returned %q, %v before the disk was announced", r.dev, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	w.dispatch(&Uevent{Action: "add", Subsystem: "block", DevName: "vdb",
		DevPath: "/devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio3/block/vdb"})
	if r := <-done; r.err != nil || r.dev != filepath.Join(dev, "vdb") {
		t.Fatalf("got %q, %v; want %s", r.dev, r.err, filepath.Join(dev, "vdb"))
	}
}
