package osbuilder

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	rootfsbuilder "github.com/kguest/kguest/rootfs-builder"
)

const testEpoch = 1700000000

// makeTree lays out a small rootfs with every kind of entry the packers
// handle: nested directories, modes with special bits, an empty file,
// symlinks, a hard link group and the device manifest.
func makeTree(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"dev", "etc", "sbin", "usr/bin", "var/lib/osbuilder", "a/b/c", "a-b"} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(os.Mkdir(filepath.Join(root, "tmp"), 0o755))
	must(os.Chmod(filepath.Join(root, "tmp"), 0o1777|os.ModeSticky))
	must(os.WriteFile(filepath.Join(root, "sbin/init"), []byte("#!/bin/sh\necho init\n"), 0o755))
	must(os.Symlink("/sbin/init", filepath.Join(root, "init")))
	must(os.WriteFile(filepath.Join(root, "etc/resolv.conf"), nil, 0o644))
	must(os.WriteFile(filepath.Join(root, "a/b/c/data"), make([]byte, 70000), 0o640))
	must(os.WriteFile(filepath.Join(root, "usr/bin/tool"), []byte("tool content"), 0o755))
	must(os.Chmod(filepath.Join(root, "usr/bin/tool"), 0o755|os.ModeSetuid))
	must(os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "usr/bin/tool2")))
	must(os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "a-b/tool3")))
	must(os.Symlink("../../usr/bin/tool", filepath.Join(root, "a/b/rel")))
	long := "/" + string(make([]byte, 0))
	for len(long) < 80 {
		long += "long/"
	}
	must(os.Symlink(long, filepath.Join(root, "a/longlink")))
	f, err := os.Create(filepath.Join(root, rootfsbuilder.DevicesFile))
	must(err)
	must(rootfsbuilder.WriteDevices(f, append(rootfsbuilder.DefaultDevices,
		rootfsbuilder.Device{Path: "dev/vda", Type: 'b', Perm: 0o660, UID: 0, GID: 6, Major: 254, Minor: 0})))
	must(f.Close())
	// Timestamps after the epoch must be clamped; one before it is kept.
	old := time.Unix(testEpoch-3600, 0)
	must(os.Chtimes(filepath.Join(root, "etc/resolv.conf"), old, old))
	return root
}
