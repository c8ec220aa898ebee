// Package osbuilder packs a rootfs tree (see rootfs-builder) into guest
// images: a reproducible newc cpio initrd, a DAX-mappable disk image (MBR,
// NVDIMM pfn info block, ext4 or erofs) and qcow2, and describes images.
package osbuilder

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	rootfsbuilder "github.com/kguest/kguest/rootfs-builder"
)

// Linux file type bits, as stored in cpio headers and inodes.
const (
	sIFMT   = 0o170000
	sIFSOCK = 0o140000
	sIFLNK  = 0o120000
	sIFREG  = 0o100000
	sIFBLK  = 0o060000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
)

// Entry is one file of a rootfs as it goes into an image: normalized
// (owner root unless set by the device manifest, mtime clamped), with
// inodes numbered in path order.
type Entry struct {
	Path   string // slash-separated, relative to the root, no leading slash
	Mode   uint32 // Linux st_mode: type and permission bits
	UID    uint32
	GID    uint32
	MTime  int64
	Size   int64  // regular files: content size; symlinks: target length
	Target string // symlink target
	Src    string // host path of a regular file's content
	Ino    uint64 // renumbered from 1 in path order; hard links share one
	NLink  uint32 // links to Ino within the tree
	Rmajor uint32 // device nodes
	Rminor uint32
	Device bool   // added from the device manifest, not present on disk
	LinkOf string // hard link: path of the group's first name
}

// Type returns the file type bits of e.
func (e *Entry) Type() uint32 { return e.Mode & sIFMT }

// Tree is a scanned rootfs.
type Tree struct {
	Root    string
	Epoch   int64
	Entries []Entry
}

// ScanTree walks root and returns its entries sorted by path, parents
// first, with the devices from its manifest merged in. Timestamps newer than
// epoch are clamped to it.
func ScanTree(root string, epoch int64) (*Tree, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("rootfs %s is not a directory", root)
	}
	devs, err := rootfsbuilder.ReadDevices(root)
	if err != nil {
		return nil, err
	}
	var ents []Entry
	type key struct{ dev, ino uint64 }
	firstOf := map[key]string{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if strings.ContainsAny(rel, "\n\x00") {
			return fmt.Errorf("%s: file names with newlines are not supported", p)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat information", p)
		}
		e := Entry{
			Path:  rel,
			Mode:  st.Mode,
			NLink: 1,
			MTime: max(0, min(st.Mtim.Sec, epoch)),
		}
		switch e.Type() {
		case sIFREG:
			e.Size = st.Size
			e.Src = p
			if st.Nlink > 1 {
				k := key{uint64(st.Dev), st.Ino}
				if first, ok := firstOf[k]; ok {
					e.LinkOf = first
				} else {
					firstOf[k] = rel
				}
			}
		case sIFLNK:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.Target = t
			e.Size = int64(len(t))
		case sIFDIR:
			e.NLink = 2
		case sIFCHR, sIFBLK, sIFIFO, sIFSOCK:
			e.Rmajor = uint32(unixMajor(st.Rdev))
			e.Rminor = uint32(unixMinor(st.Rdev))
		}
		ents = append(ents, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan rootfs: %w", err)
	}
	ents, err = mergeDevices(ents, devs, epoch)
	if err != nil {
		return nil, err
	}
	numberInodes(ents)
	return &Tree{Root: root, Epoch: epoch, Entries: ents}, nil
}

// numberInodes gives inodes in path order; the names of a hard link group
// share the inode of the first and count the group's names as links.
func numberInodes(ents []Entry) {
	var next uint64 = 1
	inoOf := map[string]uint64{}
	count := map[uint64]uint32{}
	for i := range ents {
		e := &ents[i]
		if e.LinkOf != "" {
			e.Ino = inoOf[e.LinkOf]
		} else {
			e.Ino = next
			inoOf[e.Path] = next
			next++
		}
		if e.Type() == sIFREG {
			count[e.Ino]++
		}
	}
	for i := range ents {
		if ents[i].Type() == sIFREG {
			ents[i].NLink = count[ents[i].Ino]
		}
	}
}

// mergeDevices adds the manifest's device nodes, replacing what the tree
// has at those paths, and keeps the order.
func mergeDevices(ents []Entry, devs []rootfsbuilder.Device, epoch int64) ([]Entry, error) {
	if len(devs) == 0 {
		return ents, nil
	}
	idx := map[string]int{}
	for i, e := range ents {
		idx[e.Path] = i
	}
	for _, d := range devs {
		parent := pathDir(d.Path)
		if parent != "" {
			if i, ok := idx[parent]; !ok || ents[i].Type() != sIFDIR {
				return nil, fmt.Errorf("device %s: parent directory /%s is not in the rootfs", d.Path, parent)
			}
		}
		typ := uint32(sIFCHR)
		if d.Type == 'b' {
			typ = sIFBLK
		}
		e := Entry{
			Path: d.Path, Mode: typ | d.Perm, UID: d.UID, GID: d.GID, MTime: epoch,
			NLink: 1, Rmajor: d.Major, Rminor: d.Minor, Device: true,
		}
		if i, ok := idx[d.Path]; ok {
			if ents[i].Type() == sIFDIR {
				return nil, fmt.Errorf("device %s: the rootfs has a directory there", d.Path)
			}
			ents[i] = e
			continue
		}
		idx[d.Path] = len(ents)
		ents = append(ents, e)
	}
	sort.SliceStable(ents, func(i, j int) bool { return pathLess(ents[i].Path, ents[j].Path) })
	return ents, nil
}

// pathLess orders paths component by component, which puts a directory
// right before its contents (the order of filepath.WalkDir).
func pathLess(a, b string) bool {
	for {
		ca, ra, _ := strings.Cut(a, "/")
		cb, rb, _ := strings.Cut(b, "/")
		if ca != cb {
			return ca < cb
		}
		if ra == "" || rb == "" {
			return ra == "" && rb != ""
		}
		a, b = ra, rb
	}
}

func pathDir(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func unixMajor(dev uint64) uint64 { return ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xfffff000) }
func unixMinor(dev uint64) uint64 { return (dev & 0xff) | ((dev >> 12) & 0xffffff00) }

// Digest identifies the tree's metadata (not contents): names, types,
// modes, sizes, link targets, devices and the epoch. Image UUIDs and hash
// seeds derive from it, so that a rebuild gives the same bytes.
func (t *Tree) Digest() [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "epoch %d\n", t.Epoch)
	for _, e := range t.Entries {
		fmt.Fprintf(h, "%q %o %d %d %d %q %d %d %d %q\n", e.Path, e.Mode, e.UID, e.GID, e.Size, e.Target, e.Rmajor, e.Rminor, e.Ino, e.LinkOf)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// Find returns the entry at path p, or nil.
func (t *Tree) Find(p string) *Entry {
	i := sort.Search(len(t.Entries), func(i int) bool { return !pathLess(t.Entries[i].Path, p) })
	if i < len(t.Entries) && t.Entries[i].Path == p {
		return &t.Entries[i]
	}
	return nil
}
