package osbuilder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// The NVDIMM pfn info block lets a guest kernel map a disk image given as a
// virtual NVDIMM (pmem) with DAX: the kernel reads it 4 KiB into the
// namespace and maps the data that starts at DataOff. The layout is the
// kernel's struct nd_pfn_sb (drivers/nvdimm/pfn.h), little-endian.
const (
	PfnInfoOffset = 4096
	PfnInfoSize   = 4096
	PfnSignature  = "NVDIMM_PFN_INFO\x00"

	PfnModeNone = 0
	PfnModeRAM  = 1 // memmap in RAM, as Kata writes it
	PfnModePMEM = 2

	// Version 1.4 is what the kernel writes (nd_pfn_init): 1.1 added
	// start_pad/end_trunc, 1.2 align, 1.3 zeroed padding, 1.4 page_size and
	// page_struct_size.
	PfnVersionMajor = 1
	PfnVersionMinor = 4

	// DaxDataOffset is where the mappable data (the second MBR) starts;
	// DaxAlign is the mapping alignment. Both 2 MiB, as Kata's images.
	DaxDataOffset = 2 << 20
	DaxAlign      = 2 << 20
)

// PfnSB is struct nd_pfn_sb.
type PfnSB struct {
	Signature      [16]byte
	UUID           [16]byte
	ParentUUID     [16]byte
	Flags          uint32
	VersionMajor   uint16
	VersionMinor   uint16
	DataOff        uint64
	NPfns          uint64
	Mode           uint32
	StartPad       uint32
	EndTrunc       uint32
	Align          uint32
	PageSize       uint32
	PageStructSize uint16
	Padding        [3994]byte
	Checksum       uint64
}

// NewPfnSB returns the info block for an image of size bytes, as Kata's
// image builder writes it: zero UUIDs (the QEMU nvdimm has no label, so the
// parent namespace UUID is zero), RAM mode, 2 MiB data offset and alignment.
func NewPfnSB(size int64) *PfnSB {
	sb := &PfnSB{
		VersionMajor:   PfnVersionMajor,
		VersionMinor:   PfnVersionMinor,
		DataOff:        DaxDataOffset,
		NPfns:          uint64(size-DaxDataOffset) / 4096,
		Mode:           PfnModeRAM,
		Align:          DaxAlign,
		PageSize:       4096,
		PageStructSize: 64, // MAX_STRUCT_PAGE_SIZE
	}
	copy(sb.Signature[:], PfnSignature)
	return sb
}

// Marshal encodes sb with its checksum set.
func (sb *PfnSB) Marshal() []byte {
	var b bytes.Buffer
	c := *sb
	c.Checksum = 0
	_ = binary.Write(&b, binary.LittleEndian, &c)
	buf := b.Bytes()
	binary.LittleEndian.PutUint64(buf[PfnInfoSize-8:], Fletcher64(buf))
	return buf
}

// Fletcher64 is the kernel's nd_fletcher64 over little-endian 32-bit words,
// as nd_sb_checksum applies it: the caller zeroes the checksum field first.
func Fletcher64(b []byte) uint64 {
	var lo32 uint32
	var hi32 uint64
	for i := 0; i+4 <= len(b); i += 4 {
		lo32 += binary.LittleEndian.Uint32(b[i:])
		hi32 += uint64(lo32)
	}
	return hi32<<32 | uint64(lo32)
}

// ErrNoPfnInfo is returned by ParsePfnSB when there is no info block.
var ErrNoPfnInfo = errors.New("no NVDIMM_PFN_INFO signature")

// ParsePfnSB decodes an info block and verifies its checksum.
func ParsePfnSB(b []byte) (*PfnSB, error) {
	if len(b) < PfnInfoSize {
		return nil, fmt.Errorf("pfn info block: %d bytes, want %d", len(b), PfnInfoSize)
	}
	b = b[:PfnInfoSize]
	if !bytes.Equal(b[:16], []byte(PfnSignature)) {
		return nil, ErrNoPfnInfo
	}
	var sb PfnSB
	if err := binary.Read(bytes.NewReader(b), binary.LittleEndian, &sb); err != nil {
		return nil, err
	}
	c := make([]byte, PfnInfoSize)
	copy(c, b)
	clear(c[PfnInfoSize-8:])
	if got := Fletcher64(c); got != sb.Checksum {
		return &sb, fmt.Errorf("pfn info block checksum %#x, computed %#x", sb.Checksum, got)
	}
	return &sb, nil
}

// Validate applies the checks the kernel's nd_pfn_validate makes that can
// be made without the namespace, for an image of size bytes.
func (sb *PfnSB) Validate(size int64) error {
	if sb.VersionMajor != 1 {
		return fmt.Errorf("pfn info version %d.%d, want 1.x", sb.VersionMajor, sb.VersionMinor)
	}
	if sb.Mode != PfnModeRAM && sb.Mode != PfnModePMEM {
		return fmt.Errorf("pfn info mode %d is neither RAM (1) nor PMEM (2)", sb.Mode)
	}
	if sb.DataOff%4096 != 0 || sb.DataOff >= uint64(size) {
		return fmt.Errorf("pfn info dataoff %#x is not page aligned inside the %d byte image", sb.DataOff, size)
	}
	if sb.Align != 0 && sb.DataOff%uint64(sb.Align) != 0 {
		return fmt.Errorf("pfn info dataoff %#x is not aligned to %#x", sb.DataOff, sb.Align)
	}
	if sb.StartPad != 0 || sb.EndTrunc != 0 {
		return fmt.Errorf("pfn info start_pad %d / end_trunc %d: want 0", sb.StartPad, sb.EndTrunc)
	}
	return nil
}
