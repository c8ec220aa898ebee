package osbuilder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Filesystem of a disk image.
type Filesystem string

// Supported filesystems.
const (
	Ext4  Filesystem = "ext4"
	EROFS Filesystem = "erofs"
)

// ImageFormat of a disk image file.
type ImageFormat string

// Supported image formats.
const (
	Raw   ImageFormat = "raw"
	Qcow2 ImageFormat = "qcow2"
)

// Layout constants of a disk image.
const (
	MiB = 1 << 20
	// DaxFSOffset: MBR at 0, pfn info block at 4 KiB, the data namespace
	// (second MBR) at 2 MiB, the partition 1 MiB into it.
	DaxFSOffset = 3 * MiB
	// PlainFSOffset is the usual 1 MiB partition alignment of a --no-dax disk.
	PlainFSOffset = 1 * MiB
	blockSize     = 4096
)

// ImageOptions describe a disk image build.
type ImageOptions struct {
	Rootfs   string
	Out      string
	FS       Filesystem  // default ext4
	AlignMiB int64       // total size is a multiple of this; default 128
	NoDAX    bool        // plain MBR disk without the pfn info block
	Format   ImageFormat // default raw
	FreeMiB  int64       // free space to add to the filesystem
	Epoch    int64
	Progress io.Writer
}

// ImageLayout is where things are in an image.
type ImageLayout struct {
	Size     int64 // whole image
	FSOffset int64
	FSSize   int64
	DAX      bool
}

// BuildImage makes a disk image from a rootfs without root or loop devices:
// the filesystem is written into the image file at its offset by mkfs, the
// partition tables and the pfn info block in Go.
func BuildImage(ctx context.Context, opts ImageOptions) error {
	if opts.FS == "" {
		opts.FS = Ext4
	}
	if opts.Format == "" {
		opts.Format = Raw
	}
	if opts.AlignMiB == 0 {
		opts.AlignMiB = 128
	}
	if opts.AlignMiB < 0 || opts.FreeMiB < 0 {
		return errors.New("--align and --free must not be negative")
	}
	if !opts.NoDAX && opts.AlignMiB%2 != 0 {
		return fmt.Errorf("--align %d: a DAX image must be a multiple of 2 MiB", opts.AlignMiB)
	}
	if opts.FS != Ext4 && opts.FS != EROFS {
		return fmt.Errorf("unknown filesystem %q (want ext4 or erofs)", opts.FS)
	}
	if opts.Format != Raw && opts.Format != Qcow2 {
		return fmt.Errorf("unknown format %q (want raw or qcow2)", opts.Format)
	}
	tree, err := ScanTree(opts.Rootfs, opts.Epoch)
	if err != nil {
		return err
	}
	lay := ImageLayout{FSOffset: DaxFSOffset, DAX: !opts.NoDAX}
	if opts.NoDAX {
		lay.FSOffset = PlainFSOffset
	}
	align := opts.AlignMiB * MiB

	out, err := createAtomic(opts.Out)
	if err != nil {
		return err
	}
	defer out.Abort()
	raw := out.File
	if opts.Format == Qcow2 {
		// The raw image is a scratch file, converted into out.
		raw, err = os.CreateTemp(filepath.Dir(opts.Out), "."+filepath.Base(opts.Out)+".raw-")
		if err != nil {
			return err
		}
		defer func() { raw.Close(); os.Remove(raw.Name()) }()
	}

	switch opts.FS {
	case Ext4:
		need := EstimateExt4(tree, opts.FreeMiB)
		lay.Size = roundUp(lay.FSOffset+need.Bytes, align)
		lay.FSSize = lay.Size - lay.FSOffset
		progress(opts.Progress, "image: %d files, ext4 needs ~%s; image %s (--align %d MiB)", len(tree.Entries), humanSize(need.Bytes), humanSize(lay.Size), opts.AlignMiB)
		if err := raw.Truncate(lay.Size); err != nil {
			return err
		}
		if err := makeExt4(ctx, raw.Name(), tree, lay, need, opts.Progress); err != nil {
			return err
		}
	case EROFS:
		fsImg, err := os.CreateTemp(filepath.Dir(opts.Out), "."+filepath.Base(opts.Out)+".erofs-")
		if err != nil {
			return err
		}
		fsImg.Close()
		defer os.Remove(fsImg.Name())
		if err := makeEROFS(ctx, fsImg.Name(), tree, opts.Progress); err != nil {
			return err
		}
		fi, err := os.Stat(fsImg.Name())
		if err != nil {
			return err
		}
		lay.Size = roundUp(lay.FSOffset+fi.Size()+opts.FreeMiB*MiB, align)
		lay.FSSize = lay.Size - lay.FSOffset
		progress(opts.Progress, "image: erofs is %s; image %s (--align %d MiB)", humanSize(fi.Size()), humanSize(lay.Size), opts.AlignMiB)
		if err := raw.Truncate(lay.Size); err != nil {
			return err
		}
		if err := copyAt(raw, fsImg.Name(), lay.FSOffset); err != nil {
			return err
		}
	}
	if err := writeHeaders(raw, lay, tree.Digest()); err != nil {
		return err
	}
	if opts.Format == Qcow2 {
		if err := raw.Sync(); err != nil {
			return err
		}
		progress(opts.Progress, "image: converting to qcow2")
		if err := toQcow2(ctx, raw.Name(), out.Name()); err != nil {
			return err
		}
	}
	if err := out.Commit(); err != nil {
		return err
	}
	progress(opts.Progress, "image: wrote %s (%s, %s, %s)", opts.Out, opts.Format, opts.FS, daxWord(lay.DAX))
	return nil
}

func daxWord(dax bool) string {
	if dax {
		return "DAX"
	}
	return "no DAX"
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// writeHeaders writes the MBR, and for DAX the pfn info block and the
// second MBR at the data offset, both partitions ending at the image end.
func writeHeaders(f *os.File, lay ImageLayout, digest [32]byte) error {
	diskID := binary.LittleEndian.Uint32(digest[28:])
	m := MBR{DiskID: diskID}
	m.Partitions[0] = Partition{Type: PartTypeLinux, StartLBA: uint32(lay.FSOffset / sectorSize), Sectors: uint32(lay.FSSize / sectorSize)}
	if lay.Size/sectorSize > 1<<32-1 {
		return fmt.Errorf("image of %d bytes is too large for an MBR", lay.Size)
	}
	if _, err := f.WriteAt(m.Marshal(), 0); err != nil {
		return err
	}
	if !lay.DAX {
		return nil
	}
	if _, err := f.WriteAt(NewPfnSB(lay.Size).Marshal(), PfnInfoOffset); err != nil {
		return err
	}
	m2 := MBR{DiskID: diskID}
	m2.Partitions[0] = Partition{Type: PartTypeLinux, StartLBA: uint32((lay.FSOffset - DaxDataOffset) / sectorSize), Sectors: uint32(lay.FSSize / sectorSize)}
	_, err := f.WriteAt(m2.Marshal(), DaxDataOffset)
	return err
}

func copyAt(dst *os.File, src string, off int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	_, err = io.Copy(io.NewOffsetWriter(dst, off), in)
	return err
}

func toQcow2(ctx context.Context, raw, out string) error {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		return fmt.Errorf("--format qcow2 needs qemu-img (Debian package qemu-utils): %w", err)
	}
	return run(ctx, nil, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, out)
}

// run runs a tool and returns its stderr in the error.
func run(ctx context.Context, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// sbinDirs are searched after $PATH: an unprivileged user's PATH often
// lacks them, and e2fsprogs installs there.
var sbinDirs = []string{"/usr/sbin", "/sbin"}

func needTool(name, pkg string) error {
	if toolPath(name) == "" {
		return fmt.Errorf("%s not found: install the Debian package %s (apt-get install %s)", name, pkg, pkg)
	}
	return nil
}

// toolPath finds a tool in $PATH or sbinDirs, or returns "".
func toolPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range sbinDirs {
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// fsUUID derives a filesystem UUID (RFC 4122 version 4 layout) from the
// tree digest and a purpose, so rebuilds give the same bytes.
func fsUUID(digest [32]byte, purpose string) string {
	h := sha256.Sum256(append(digest[:], purpose...))
	u := h[:16]
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
