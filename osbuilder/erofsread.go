package osbuilder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// erofsReader reads uncompressed files from an erofs image, as mkfs.erofs
// writes them without -z: enough for info to find /init and the provenance.
type erofsReader struct {
	r       io.ReaderAt
	off     int64 // of the filesystem in r
	blkbits uint
	meta    int64 // byte offset of the metadata area
	root    uint64
}

const (
	erofsLayoutPlain  = 0
	erofsLayoutInline = 2
)

func newEROFSReader(r io.ReaderAt, off int64) (*erofsReader, error) {
	sb := make([]byte, 128)
	if _, err := r.ReadAt(sb, off+1024); err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint32(sb) != 0xe0f5e1e2 {
		return nil, errors.New("no erofs superblock")
	}
	e := &erofsReader{r: r, off: off, blkbits: uint(sb[12]), root: uint64(binary.LittleEndian.Uint16(sb[14:]))}
	if e.blkbits < 9 || e.blkbits > 16 {
		return nil, fmt.Errorf("erofs block size 2^%d", e.blkbits)
	}
	e.meta = int64(binary.LittleEndian.Uint32(sb[40:])) << e.blkbits
	return e, nil
}

type erofsInode struct {
	pos    int64 // of the on-disk inode in the image
	ext    bool  // 64-byte extended inode
	mode   uint16
	layout int
	size   int64
	blk    int64 // raw_blkaddr
	tail   int64 // where inline data starts
}

func (e *erofsReader) inode(nid uint64) (*erofsInode, error) {
	pos := e.off + e.meta + int64(nid)*32
	b := make([]byte, 64)
	if _, err := e.r.ReadAt(b, pos); err != nil {
		return nil, err
	}
	format := binary.LittleEndian.Uint16(b)
	in := &erofsInode{pos: pos, mode: binary.LittleEndian.Uint16(b[4:]), layout: int(format>>1) & 7}
	isize := int64(32)
	if format&1 == 1 {
		isize = 64
		in.ext = true
		in.size = int64(binary.LittleEndian.Uint64(b[8:]))
	} else {
		in.size = int64(binary.LittleEndian.Uint32(b[8:]))
	}
	in.blk = int64(binary.LittleEndian.Uint32(b[16:]))
	xattrs := int64(0)
	if n := int64(binary.LittleEndian.Uint16(b[2:])); n > 0 {
		xattrs = 12 + (n-1)*4
	}
	in.tail = pos + isize + xattrs
	return in, nil
}

// data reads an inode's content.
func (e *erofsReader) data(in *erofsInode) ([]byte, error) {
	if in.size > 64<<20 {
		return nil, fmt.Errorf("erofs file of %d bytes is too large to read", in.size)
	}
	buf := make([]byte, in.size)
	bs := int64(1) << e.blkbits
	switch in.layout {
	case erofsLayoutPlain:
		if _, err := e.r.ReadAt(buf, e.off+in.blk<<e.blkbits); err != nil {
			return nil, err
		}
	case erofsLayoutInline:
		full := (in.size - 1) / bs * bs // all but the tail block
		if in.size == 0 {
			full = 0
		}
		if full > 0 {
			if _, err := e.r.ReadAt(buf[:full], e.off+in.blk<<e.blkbits); err != nil {
				return nil, err
			}
		}
		if _, err := e.r.ReadAt(buf[full:], in.tail); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("erofs data layout %d (compressed or chunked) is not supported", in.layout)
	}
	return buf, nil
}

// dataPos maps an offset in an inode's data to its position in the image.
func (e *erofsReader) dataPos(in *erofsInode, off int64) int64 {
	bs := int64(1) << e.blkbits
	if in.layout == erofsLayoutInline {
		full := (in.size - 1) / bs * bs
		if off >= full {
			return in.tail + off - full
		}
	}
	return e.off + in.blk<<e.blkbits + off
}

// lookup resolves a path (no symlinks followed) to its inode.
func (e *erofsReader) lookup(p string) (*erofsInode, error) {
	nid := e.root
	in, err := e.inode(nid)
	if err != nil {
		return nil, err
	}
	for _, name := range strings.Split(strings.Trim(p, "/"), "/") {
		if in.mode&sIFMT != sIFDIR {
			return nil, fmt.Errorf("%s: not a directory", p)
		}
		d, err := e.data(in)
		if err != nil {
			return nil, err
		}
		child, ok := erofsDirLookup(d, int(1)<<e.blkbits, name)
		if !ok {
			return nil, fmt.Errorf("%s: not found", p)
		}
		if in, err = e.inode(child); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// erofsDirLookup finds name in directory data: per block, 12-byte dirents
// (nid, nameoff, file_type) then the names; the first nameoff gives the
// dirent count.
func erofsDirLookup(d []byte, bs int, name string) (uint64, bool) {
	nid, _, ok := erofsDirent(d, bs, name)
	return nid, ok
}

// erofsDirent returns the nid of name and the offset of its dirent in d.
func erofsDirent(d []byte, bs int, name string) (uint64, int, bool) {
	for start := 0; start < len(d); start += bs {
		blk := d[start:min(start+bs, len(d))]
		if len(blk) < 12 {
			break
		}
		n := int(binary.LittleEndian.Uint16(blk[8:])) / 12
		for i := 0; i < n && (i+1)*12 <= len(blk); i++ {
			de := blk[i*12:]
			from := int(binary.LittleEndian.Uint16(de[8:]))
			to := len(blk)
			if i+1 < n {
				to = int(binary.LittleEndian.Uint16(blk[(i+1)*12+8:]))
			}
			if from > to || to > len(blk) {
				return 0, 0, false
			}
			nm := blk[from:to]
			if j := bytes.IndexByte(nm, 0); j >= 0 {
				nm = nm[:j]
			}
			if string(nm) == name {
				return binary.LittleEndian.Uint64(de), start + i*12, true
			}
		}
	}
	return 0, 0, false
}

// readEROFS fills in the provenance and /init of an erofs partition.
func (info *Info) readEROFS(r io.ReaderAt) {
	e, err := newEROFSReader(r, info.FSOffset)
	if err != nil {
		return
	}
	if in, err := e.lookup(rootfsProvenancePath); err == nil {
		if b, err := e.data(in); err == nil {
			info.Provenance = string(b)
		}
	}
	if in, err := e.lookup("init"); err == nil {
		switch in.mode & sIFMT {
		case sIFLNK:
			if b, err := e.data(in); err == nil {
				info.Init = "/init -> " + string(b)
			}
		case sIFREG:
			info.Init = "/init"
		}
	} else if in, err := e.lookup("sbin/init"); err == nil && in.mode&sIFMT == sIFREG {
		info.Init = "/sbin/init"
	}
}
