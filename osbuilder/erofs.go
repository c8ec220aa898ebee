package osbuilder

import (
	"context"
	"fmt"
	"io"
	"strconv"
)

// makeEROFS makes an erofs image of the tree in out: owners root, all
// timestamps the epoch, no host xattrs, a UUID derived from the tree.
func makeEROFS(ctx context.Context, out string, t *Tree, prog io.Writer) error {
	if err := needTool("mkfs.erofs", "erofs-utils"); err != nil {
		return err
	}
	args := []string{
		"--quiet", "--all-root", "-x-1",
		"-T" + strconv.FormatInt(t.Epoch, 10),
		"-U" + fsUUID(t.Digest(), "erofs uuid"),
		out, t.Root,
	}
	progress(prog, "image: mkfs.erofs %s", t.Root)
	if err := run(ctx, []string{"TZ=UTC"}, toolPath("mkfs.erofs"), args...); err != nil {
		return fmt.Errorf("make erofs: %w", err)
	}
	return addEROFSDevices(out, t, prog)
}

// addEROFSDevices reports the manifest devices that an erofs image lacks:
// mkfs.erofs 1.5 reads only a directory, where nodes cannot be made without
// root. A disk root gets them from devtmpfs (CONFIG_DEVTMPFS_MOUNT) and the
// kernel opens /dev/console from its own initramfs.
func addEROFSDevices(_ string, t *Tree, prog io.Writer) error {
	for _, e := range t.Entries {
		if e.Device {
			progress(prog, "image: warning: erofs: device node /%s not added (devtmpfs provides it at boot)", e.Path)
		}
	}
	return nil
}
