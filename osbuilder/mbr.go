package osbuilder

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MBR partition table, enough for one Linux partition.
const (
	sectorSize    = 512
	mbrTableOff   = 446
	mbrSigOff     = 510
	PartTypeLinux = 0x83
)

// Partition is a primary MBR partition entry.
type Partition struct {
	Bootable bool
	Type     byte
	StartLBA uint32
	Sectors  uint32
}

// MBR is a parsed master boot record.
type MBR struct {
	DiskID     uint32
	Partitions [4]Partition
}

// Marshal encodes the 512-byte sector. CHS fields hold the "use LBA" values
// (1023/254/63) modern tools write.
func (m *MBR) Marshal() []byte {
	b := make([]byte, sectorSize)
	binary.LittleEndian.PutUint32(b[440:], m.DiskID)
	for i, p := range m.Partitions {
		if p.Type == 0 {
			continue
		}
		e := b[mbrTableOff+16*i:]
		if p.Bootable {
			e[0] = 0x80
		}
		copy(e[1:4], []byte{0xfe, 0xff, 0xff})
		e[4] = p.Type
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], p.StartLBA)
		binary.LittleEndian.PutUint32(e[12:], p.Sectors)
	}
	b[mbrSigOff], b[mbrSigOff+1] = 0x55, 0xaa
	return b
}

// ErrNoMBR is returned when a sector has no 0x55AA signature.
var ErrNoMBR = errors.New("no MBR boot signature")

// ParseMBR decodes a sector.
func ParseMBR(b []byte) (*MBR, error) {
	if len(b) < sectorSize {
		return nil, fmt.Errorf("MBR: short sector (%d bytes)", len(b))
	}
	if b[mbrSigOff] != 0x55 || b[mbrSigOff+1] != 0xaa {
		return nil, ErrNoMBR
	}
	m := &MBR{DiskID: binary.LittleEndian.Uint32(b[440:])}
	for i := range m.Partitions {
		e := b[mbrTableOff+16*i:]
		m.Partitions[i] = Partition{
			Bootable: e[0] == 0x80,
			Type:     e[4],
			StartLBA: binary.LittleEndian.Uint32(e[8:]),
			Sectors:  binary.LittleEndian.Uint32(e[12:]),
		}
	}
	return m, nil
}
