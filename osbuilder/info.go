package osbuilder

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	rootfsbuilder "github.com/kguest/kguest/rootfs-builder"
	"github.com/u-root/u-root/pkg/cpio"
)

const rootfsProvenancePath = rootfsbuilder.ProvenanceFile

// Info describes an initrd or a disk image.
type Info struct {
	Path        string      `json:"path"`
	Size        int64       `json:"size"`
	Kind        string      `json:"kind"`   // "initrd" or "disk"
	Format      string      `json:"format"` // initrd: "cpio (newc)"; disk: "raw" or "qcow2"
	Compression Compression `json:"compression,omitempty"`
	VirtualSize int64       `json:"virtual_size,omitempty"` // qcow2
	Files       int         `json:"files"`
	Init        string      `json:"init,omitempty"`
	Devices     []string    `json:"devices,omitempty"`
	Provenance  string      `json:"provenance,omitempty"`

	Partitions []Partition `json:"partitions,omitempty"`
	DAX        *DAXInfo    `json:"dax,omitempty"`
	FSType     string      `json:"fs_type,omitempty"`
	FSOffset   int64       `json:"fs_offset,omitempty"`

	// Problems are reasons the file is corrupt or not usable as a guest image.
	Problems []string `json:"problems,omitempty"`
}

// DAXInfo is the NVDIMM part of a disk image.
type DAXInfo struct {
	Valid        bool   `json:"valid"`
	Version      string `json:"version"`
	Mode         uint32 `json:"mode"`
	DataOff      uint64 `json:"dataoff"`
	Align        uint32 `json:"align"`
	NPfns        uint64 `json:"npfns"`
	Checksum     uint64 `json:"checksum"`
	SecondMBR    bool   `json:"second_mbr"`
	PartitionOff int64  `json:"partition_offset"` // from the second MBR, in the file
}

// Inspect reads an initrd or disk image and describes it. Corruption is
// reported in Info.Problems; the error is for files that cannot be read.
func Inspect(ctx context.Context, path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	info := &Info{Path: path, Size: fi.Size()}
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if c, ok := DetectCompression(head); ok {
		info.Kind, info.Format, info.Compression = "initrd", "cpio (newc)", c
		return info, inspectInitrd(info, f, c)
	}
	if bytes.HasPrefix(head, magicQcow2) {
		info.Kind, info.Format = "disk", "qcow2"
		if len(head) >= 32 {
			info.VirtualSize = int64(binary.BigEndian.Uint64(head[24:]))
		}
		raw, cleanup, err := qcow2ToRaw(ctx, path)
		if err != nil {
			return info, err
		}
		defer cleanup()
		rf, err := os.Open(raw)
		if err != nil {
			return info, err
		}
		defer rf.Close()
		rfi, err := rf.Stat()
		if err != nil {
			return info, err
		}
		return info, inspectDisk(ctx, info, rf, raw, rfi.Size())
	}
	if len(head) == 512 && head[510] == 0x55 && head[511] == 0xaa {
		info.Kind, info.Format = "disk", "raw"
		return info, inspectDisk(ctx, info, f, path, fi.Size())
	}
	return info, fmt.Errorf("%s is neither an initrd (cpio, gzip, zstd, xz) nor a disk image (MBR, qcow2)", path)
}

func inspectInitrd(info *Info, f *os.File, c Compression) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	zr, err := decompressor(c, f)
	if err != nil {
		info.Problems = append(info.Problems, fmt.Sprintf("%s stream: %v", c, err))
		return nil
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		info.Problems = append(info.Problems, fmt.Sprintf("%s stream: %v", c, err))
		return nil
	}
	rr := cpio.Newc.Reader(bytes.NewReader(data))
	links := map[string]string{}
	seen := map[string]bool{}
	err = cpio.ForEachRecord(rr, func(r cpio.Record) error {
		info.Files++
		seen[r.Name] = true
		switch r.Mode & sIFMT {
		case sIFLNK:
			b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil {
				return err
			}
			links[r.Name] = string(b)
		case sIFCHR, sIFBLK:
			t := "c"
			if r.Mode&sIFMT == sIFBLK {
				t = "b"
			}
			info.Devices = append(info.Devices, fmt.Sprintf("/%s %s %d:%d", r.Name, t, r.Rmajor, r.Rminor))
		case sIFREG:
			if r.Name == rootfsbuilder.ProvenanceFile {
				b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
				if err != nil {
					return err
				}
				info.Provenance = string(b)
			}
		}
		return nil
	})
	if err != nil {
		info.Problems = append(info.Problems, fmt.Sprintf("cpio: %v", err))
	}
	switch {
	case links["init"] != "":
		info.Init = "/init -> " + links["init"]
	case seen["init"]:
		info.Init = "/init"
	default:
		info.Problems = append(info.Problems, "no /init: the kernel will not run anything from this initrd")
	}
	return nil
}

func inspectDisk(ctx context.Context, info *Info, f io.ReaderAt, path string, size int64) error {
	sector := make([]byte, 512)
	if _, err := f.ReadAt(sector, 0); err != nil {
		return err
	}
	mbr, err := ParseMBR(sector)
	if err != nil {
		info.Problems = append(info.Problems, "MBR at 0: "+err.Error())
		return nil
	}
	for _, p := range mbr.Partitions {
		if p.Type != 0 {
			info.Partitions = append(info.Partitions, p)
		}
	}
	if len(info.Partitions) == 0 {
		info.Problems = append(info.Problems, "MBR at 0 has no partition")
		return nil
	}
	p := info.Partitions[0]
	info.FSOffset = int64(p.StartLBA) * sectorSize
	if end := info.FSOffset + int64(p.Sectors)*sectorSize; end > size {
		info.Problems = append(info.Problems, fmt.Sprintf("partition 1 ends at %d, beyond the image end %d", end, size))
	}

	blk := make([]byte, PfnInfoSize)
	if _, err := f.ReadAt(blk, PfnInfoOffset); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	sb, err := ParsePfnSB(blk)
	switch {
	case errors.Is(err, ErrNoPfnInfo):
		if info.FSOffset == DaxFSOffset {
			info.Problems = append(info.Problems, "partition starts at 3 MiB (DAX layout) but there is no NVDIMM_PFN_INFO block at 4096")
		}
	case err != nil:
		info.DAX = &DAXInfo{}
		if sb != nil {
			info.DAX.Checksum = sb.Checksum
		}
		info.Problems = append(info.Problems, err.Error())
	default:
		d := &DAXInfo{
			Version: fmt.Sprintf("%d.%d", sb.VersionMajor, sb.VersionMinor),
			Mode:    sb.Mode, DataOff: sb.DataOff, Align: sb.Align, NPfns: sb.NPfns, Checksum: sb.Checksum,
		}
		info.DAX = d
		d.Valid = true
		if err := sb.Validate(size); err != nil {
			d.Valid = false
			info.Problems = append(info.Problems, err.Error())
			break
		}
		if _, err := f.ReadAt(sector, int64(sb.DataOff)); err != nil {
			return err
		}
		m2, err := ParseMBR(sector)
		if err != nil {
			d.Valid = false
			info.Problems = append(info.Problems, fmt.Sprintf("MBR at dataoff %d: %v", sb.DataOff, err))
			break
		}
		d.SecondMBR = true
		d.PartitionOff = int64(sb.DataOff) + int64(m2.Partitions[0].StartLBA)*sectorSize
		if d.PartitionOff != info.FSOffset {
			d.Valid = false
			info.Problems = append(info.Problems, fmt.Sprintf("the second MBR's partition is at %d, the first's at %d", d.PartitionOff, info.FSOffset))
		}
	}

	sbuf := make([]byte, 2048)
	if _, err := f.ReadAt(sbuf, info.FSOffset); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	switch {
	case binary.LittleEndian.Uint16(sbuf[1024+0x38:]) == 0xef53:
		info.FSType = "ext4"
		s := sbuf[1024:]
		inodes := binary.LittleEndian.Uint32(s[0:])
		free := binary.LittleEndian.Uint32(s[16:])
		firstIno := binary.LittleEndian.Uint32(s[84:])
		info.Files = int(inodes-free) - int(firstIno-1) // in-use inodes beyond the reserved ones
		if feat := binary.LittleEndian.Uint32(s[0x60:]); feat&0x40 == 0 {
			info.FSType = "ext2/3"
		}
		info.readExt4(ctx, path)
	case binary.LittleEndian.Uint32(sbuf[1024:]) == 0xe0f5e1e2:
		info.FSType = "erofs"
		info.Files = int(binary.LittleEndian.Uint64(sbuf[1024+16:]))
		info.readEROFS(f)
	default:
		info.FSType = "unknown"
		info.Problems = append(info.Problems, fmt.Sprintf("no ext4 or erofs superblock at the partition start (%d)", info.FSOffset))
	}
	return nil
}

// readExt4 reads the provenance file and /init from an ext4 partition.
func (info *Info) readExt4(ctx context.Context, path string) {
	if toolPath("debugfs") == "" {
		return
	}
	dev := fmt.Sprintf("%s?offset=%d", path, info.FSOffset)
	out, err := exec.CommandContext(ctx, toolPath("debugfs"), "-R", "cat /"+rootfsbuilder.ProvenanceFile, dev).Output()
	if err == nil {
		info.Provenance = string(out)
	}
	out, err = exec.CommandContext(ctx, toolPath("debugfs"), "-R", "stat /init", dev).Output()
	if err == nil {
		s := string(out)
		if i := strings.Index(s, "Fast link dest: "); i >= 0 {
			t := strings.TrimSpace(strings.SplitN(s[i+len("Fast link dest: "):], "\n", 2)[0])
			info.Init = "/init -> " + strings.Trim(t, `"`)
		} else if strings.Contains(s, "Type: regular") {
			info.Init = "/init"
		}
	}
	if info.Init == "" {
		out, err = exec.CommandContext(ctx, toolPath("debugfs"), "-R", "stat /sbin/init", dev).Output()
		if err == nil && strings.Contains(string(out), "Inode:") {
			info.Init = "/sbin/init"
		}
	}
}

func qcow2ToRaw(ctx context.Context, path string) (string, func(), error) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		return "", nil, fmt.Errorf("reading qcow2 needs qemu-img (Debian package qemu-utils): %w", err)
	}
	dir, err := os.MkdirTemp("", "osbuilder-info-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	raw := filepath.Join(dir, "disk.raw")
	if err := run(ctx, nil, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", path, raw); err != nil {
		cleanup()
		return "", nil, err
	}
	return raw, cleanup, nil
}

// Print writes a human-readable description.
func (info *Info) Print(w io.Writer) {
	fmt.Fprintf(w, "file:         %s\n", info.Path)
	fmt.Fprintf(w, "kind:         %s\n", info.Kind)
	fmt.Fprintf(w, "format:       %s\n", info.Format)
	if info.Compression != "" {
		fmt.Fprintf(w, "compression:  %s\n", info.Compression)
	}
	fmt.Fprintf(w, "size:         %d (%s)\n", info.Size, humanSize(info.Size))
	if info.VirtualSize != 0 {
		fmt.Fprintf(w, "virtual size: %d (%s)\n", info.VirtualSize, humanSize(info.VirtualSize))
	}
	if len(info.Partitions) > 0 {
		fmt.Fprintf(w, "partitions:\n")
		for i, p := range info.Partitions {
			fmt.Fprintf(w, "  %d: type 0x%02x, start %d (%s), size %d (%s)\n", i+1, p.Type,
				int64(p.StartLBA)*sectorSize, humanSize(int64(p.StartLBA)*sectorSize),
				int64(p.Sectors)*sectorSize, humanSize(int64(p.Sectors)*sectorSize))
		}
	}
	if info.Kind == "disk" {
		if d := info.DAX; d != nil {
			state := "valid"
			if !d.Valid {
				state = "INVALID"
			}
			fmt.Fprintf(w, "dax:          %s NVDIMM_PFN_INFO v%s at %d, mode %d, dataoff %d, align %d, npfns %d, checksum %#016x, second MBR %v, partition at %d\n",
				state, d.Version, PfnInfoOffset, d.Mode, d.DataOff, d.Align, d.NPfns, d.Checksum, d.SecondMBR, d.PartitionOff)
		} else {
			fmt.Fprintf(w, "dax:          no (plain MBR disk)\n")
		}
		fmt.Fprintf(w, "filesystem:   %s at %d\n", info.FSType, info.FSOffset)
	}
	fmt.Fprintf(w, "files:        %d\n", info.Files)
	if info.Init != "" {
		fmt.Fprintf(w, "init:         %s\n", info.Init)
	}
	for _, d := range info.Devices {
		fmt.Fprintf(w, "device:       %s\n", d)
	}
	if info.Provenance != "" {
		fmt.Fprintf(w, "provenance (/%s):\n", rootfsbuilder.ProvenanceFile)
		for _, l := range strings.Split(strings.TrimRight(info.Provenance, "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	for _, p := range info.Problems {
		fmt.Fprintf(w, "PROBLEM:      %s\n", p)
	}
}
