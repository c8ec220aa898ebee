package storage

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kguest/kguest/agent/device"
)

// TestBlockStorage mounts an ext4 image through a loop device with the
// block handler (mmioblk and nvdimm name the node, as the runtime does).
func TestBlockStorage(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"losetup", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })

	w, err := device.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	m := newManager(t)
	m.Devices = device.NewManager(w, time.Second)
	mp := filepath.Join(m.Root, "c1/rootfs")
	ctx := context.Background()
	_, err = m.Add(ctx, "c1", []Storage{{Driver: DriverMMIOBlk, Source: loop, Fstype: "ext4", MountPoint: mp, Options: []string{"nodev"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mp, "lost+found")); err != nil {
		t.Errorf("ext4 not mounted: %v", err)
	}
	if err := m.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if isMountPoint(t, mp) {
		t.Error("still mounted")
	}
	// A device that never appears times out within the hot-plug timeout.
	m.Devices.Timeout = 100 * time.Millisecond
	_, err = m.Add(ctx, "c2", []Storage{{Driver: DriverNVDIMM, Source: "/dev/pmem97", Fstype: "ext4", MountPoint: mp}})
	if !errors.Is(err, device.ErrTimeout) {
		t.Errorf("missing device: %v, want ErrTimeout", err)
	}
	_, err = m.Add(ctx, "c2", []Storage{{Driver: DriverBlk, Source: "02/00", MountPoint: mp}})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("blk without fstype: %v, want ErrInvalid", err)
	}
}
