package osbuilder

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
)

// makeEROFS makes an erofs image of the tree in out: owners root, all
// timestamps the epoch, no host xattrs, a UUID derived from the tree.
//
// mkfs.erofs reads only a directory, and device nodes cannot be made
// without root. With a device manifest, mkfs.erofs reads a staged copy of
// the tree (hard links where possible) with empty placeholder files at the
// device paths, whose inodes and directory entries are then rewritten into
// device nodes.
func makeEROFS(ctx context.Context, out string, t *Tree, prog io.Writer) error {
	if err := needTool("mkfs.erofs", "erofs-utils"); err != nil {
		return err
	}
	src := t.Root
	var devs []*Entry
	for i := range t.Entries {
		if t.Entries[i].Device {
			devs = append(devs, &t.Entries[i])
		}
	}
	if len(devs) > 0 {
		stage, err := os.MkdirTemp(filepath.Dir(out), ".erofs-stage-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(stage)
		progress(prog, "image: staging %s with device placeholders", t.Root)
		if err := stageTree(t, stage); err != nil {
			return fmt.Errorf("stage rootfs: %w", err)
		}
		src = stage
	}
	args := []string{
		"--quiet", "--all-root", "-x-1",
		"-T" + strconv.FormatInt(t.Epoch, 10),
		"-U" + fsUUID(t.Digest(), "erofs uuid"),
		out, src,
	}
	progress(prog, "image: mkfs.erofs %s", t.Root)
	if err := run(ctx, []string{"TZ=UTC"}, toolPath("mkfs.erofs"), args...); err != nil {
		return fmt.Errorf("make erofs: %w", err)
	}
	if len(devs) == 0 {
		return nil
	}
	return patchEROFSDevices(out, devs)
}

// stageTree recreates the tree's directories in stage, hard links (or
// copies) its files, recreates symlinks and puts an empty file at each
// device path.
func stageTree(t *Tree, stage string) error {
	for _, e := range t.Entries {
		dst := filepath.Join(stage, filepath.FromSlash(e.Path))
		if e.Device {
			if err := os.WriteFile(dst, nil, 0o600); err != nil {
				return err
			}
			continue
		}
		src := filepath.Join(t.Root, filepath.FromSlash(e.Path))
		switch e.Type() {
		case sIFDIR:
			if err := os.Mkdir(dst, 0o700); err != nil {
				return err
			}
			if err := os.Chmod(dst, os.FileMode(e.Mode&0o777)|modeBits(e.Mode)); err != nil {
				return err
			}
		case sIFLNK:
			if err := os.Symlink(e.Target, dst); err != nil {
				return err
			}
		case sIFREG:
			if e.LinkOf != "" {
				if err := os.Link(filepath.Join(stage, filepath.FromSlash(e.LinkOf)), dst); err != nil {
					return err
				}
				continue
			}
			if err := os.Link(src, dst); err != nil {
				// Another filesystem, or protected_hardlinks: copy.
				if err := copyRegular(src, dst, os.FileMode(e.Mode&0o777)|modeBits(e.Mode)); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("%s: cannot stage file type %o", e.Path, e.Type())
		}
	}
	return nil
}

func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

func copyRegular(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

// erofs directory entry file types.
const (
	erofsFTChrdev = 3
	erofsFTBlkdev = 4
)

// patchEROFSDevices turns the placeholder files into device nodes: the
// inode's mode, rdev (new_encode_dev, as the kernel decodes i_u.rdev),
// owner, and the file type in the parent's directory entry.
func patchEROFSDevices(img string, devs []*Entry) error {
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	e, err := newEROFSReader(f, 0)
	if err != nil {
		return err
	}
	// The patched inodes may share block 0 with the superblock, which is
	// checksummed; check that the checksum is understood before writing.
	sumOK, err := erofsSBChecksum(f, e, false)
	if err != nil {
		return err
	}
	if !sumOK {
		return errors.New("erofs: superblock checksum does not verify before patching")
	}
	for _, d := range devs {
		parent, err := e.lookup(pathDir(d.Path))
		if pathDir(d.Path) == "" {
			parent, err = e.inode(e.root)
		}
		if err != nil {
			return fmt.Errorf("erofs: device %s: %w", d.Path, err)
		}
		data, err := e.data(parent)
		if err != nil {
			return err
		}
		nid, off, ok := erofsDirent(data, 1<<e.blkbits, path.Base(d.Path))
		if !ok {
			return fmt.Errorf("erofs: placeholder for %s not found", d.Path)
		}
		in, err := e.inode(nid)
		if err != nil {
			return err
		}
		if in.mode&sIFMT != sIFREG || in.size != 0 {
			return fmt.Errorf("erofs: placeholder for %s is not an empty file", d.Path)
		}
		var b [4]byte
		binary.LittleEndian.PutUint16(b[:], uint16(d.Mode))
		if _, err := f.WriteAt(b[:2], in.pos+4); err != nil {
			return err
		}
		rdev := d.Rminor&0xff | d.Rmajor<<8 | (d.Rminor&^0xff)<<12
		binary.LittleEndian.PutUint32(b[:], rdev)
		if _, err := f.WriteAt(b[:], in.pos+16); err != nil {
			return err
		}
		if in.ext {
			binary.LittleEndian.PutUint32(b[:], d.UID)
			f.WriteAt(b[:], in.pos+24)
			binary.LittleEndian.PutUint32(b[:], d.GID)
			_, err = f.WriteAt(b[:], in.pos+28)
		} else {
			if d.UID > 0xffff || d.GID > 0xffff {
				return fmt.Errorf("erofs: device %s owner %d:%d needs an extended inode", d.Path, d.UID, d.GID)
			}
			binary.LittleEndian.PutUint16(b[:], uint16(d.UID))
			binary.LittleEndian.PutUint16(b[2:], uint16(d.GID))
			_, err = f.WriteAt(b[:], in.pos+24)
		}
		if err != nil {
			return err
		}
		ft := byte(erofsFTChrdev)
		if d.Type() == sIFBLK {
			ft = erofsFTBlkdev
		}
		if _, err := f.WriteAt([]byte{ft}, e.dataPos(parent, int64(off)+10)); err != nil {
			return err
		}
	}
	if _, err := erofsSBChecksum(f, e, true); err != nil {
		return err
	}
	return f.Sync()
}

// erofsSBChecksum verifies (or, with update, rewrites) the superblock
// checksum: crc32c seeded with ~0 and not inverted, as the kernel computes
// it, over the superblock block from offset 1024 with the field zeroed.
// Images without the SB_CHKSUM feature verify trivially.
func erofsSBChecksum(f *os.File, e *erofsReader, update bool) (bool, error) {
	bs := int64(1) << e.blkbits
	buf := make([]byte, bs-1024)
	if _, err := f.ReadAt(buf, e.off+1024); err != nil {
		return false, err
	}
	if binary.LittleEndian.Uint32(buf[8:])&1 == 0 { // EROFS_FEATURE_COMPAT_SB_CHKSUM
		return true, nil
	}
	saved := binary.LittleEndian.Uint32(buf[4:])
	clear(buf[4:8])
	sum := ^crc32.Checksum(buf, crc32.MakeTable(crc32.Castagnoli))
	if update {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], sum)
		_, err := f.WriteAt(b[:], e.off+1024+4)
		return err == nil, err
	}
	return sum == saved, nil
}
