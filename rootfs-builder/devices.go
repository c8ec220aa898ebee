package rootfsbuilder

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// DevicesFile is where a rootfs records the device nodes that the packers
// (initrd, image) must add. Creating them with mknod would need root; the
// packers write them as archive records or filesystem inodes instead.
//
// The format is the "nod" line of the kernel's usr/gen_init_cpio:
//
//	nod <name> <mode> <uid> <gid> <dev_type> <maj> <min>
//
// with name relative to the rootfs ("/dev/console" and "dev/console" are the
// same), mode in octal, dev_type "c" or "b". Blank lines and lines starting
// with '#' are ignored.
const DevicesFile = "var/lib/osbuilder/devices"

// Device is one device node to be created by a packer.
type Device struct {
	Path         string // relative to the rootfs, no leading slash
	Type         byte   // 'c' or 'b'
	Perm         uint32 // permission bits
	UID, GID     uint32
	Major, Minor uint32
}

// DefaultDevices are the nodes the kernel and an agent-as-init need before
// devtmpfs is mounted: the console for init's stdio and /dev/null.
var DefaultDevices = []Device{
	{Path: "dev/console", Type: 'c', Perm: 0o600, Major: 5, Minor: 1},
	{Path: "dev/null", Type: 'c', Perm: 0o666, Major: 1, Minor: 3},
}

// String formats d as a manifest line.
func (d Device) String() string {
	return fmt.Sprintf("nod /%s %04o %d %d %c %d %d", d.Path, d.Perm, d.UID, d.GID, d.Type, d.Major, d.Minor)
}

// WriteDevices writes the manifest lines for devs.
func WriteDevices(w io.Writer, devs []Device) error {
	if _, err := fmt.Fprintln(w, "# Device nodes added by osbuilder initrd/image (gen_init_cpio 'nod' syntax)."); err != nil {
		return err
	}
	for _, d := range devs {
		if _, err := fmt.Fprintln(w, d.String()); err != nil {
			return err
		}
	}
	return nil
}

// ParseDevices parses a device manifest.
func ParseDevices(r io.Reader) ([]Device, error) {
	var devs []Device
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Fields(s)
		if len(f) != 8 || f[0] != "nod" {
			return nil, fmt.Errorf("line %d: want \"nod <name> <mode> <uid> <gid> <c|b> <maj> <min>\", got %q", line, s)
		}
		name := path.Clean("/" + f[1])[1:]
		if name == "" {
			return nil, fmt.Errorf("line %d: empty device name", line)
		}
		nums := make([]uint64, 5)
		for i, idx := range []int{2, 3, 4, 6, 7} {
			base := 10
			if idx == 2 {
				base = 8
			}
			v, err := strconv.ParseUint(f[idx], base, 32)
			if err != nil {
				return nil, fmt.Errorf("line %d: field %d: %w", line, idx+1, err)
			}
			nums[i] = v
		}
		if f[5] != "c" && f[5] != "b" {
			return nil, fmt.Errorf("line %d: device type %q is not c or b", line, f[5])
		}
		if nums[0]&^0o7777 != 0 {
			return nil, fmt.Errorf("line %d: mode %s has file type bits", line, f[2])
		}
		devs = append(devs, Device{
			Path: name, Type: f[5][0], Perm: uint32(nums[0]),
			UID: uint32(nums[1]), GID: uint32(nums[2]),
			Major: uint32(nums[3]), Minor: uint32(nums[4]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return devs, nil
}

// ReadDevices reads the manifest of the rootfs at root. A rootfs without a
// manifest has no devices to add.
func ReadDevices(root string) ([]Device, error) {
	f, err := os.Open(filepath.Join(root, DevicesFile))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	devs, err := ParseDevices(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(root, DevicesFile), err)
	}
	return devs, nil
}
