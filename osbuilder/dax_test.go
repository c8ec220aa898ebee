package osbuilder

import (
	"encoding/binary"
	"errors"
	"math/big"
	"testing"
)

// refFletcher64 is an independent nd_fletcher64: arbitrary precision sums
// reduced mod 2^32 at the end, words assembled byte by byte.
func refFletcher64(b []byte) uint64 {
	lo, hi := new(big.Int), new(big.Int)
	mod := new(big.Int).Lsh(big.NewInt(1), 32)
	for i := 0; i+4 <= len(b); i += 4 {
		w := int64(b[i]) | int64(b[i+1])<<8 | int64(b[i+2])<<16 | int64(b[i+3])<<24
		lo.Add(lo, big.NewInt(w))
		lo.Mod(lo, mod)
		hi.Add(hi, lo)
		hi.Mod(hi, mod)
	}
	return hi.Uint64()<<32 | lo.Uint64()
}

func TestFletcher64Vectors(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want uint64
	}{
		{nil, 0},
		{[]byte{1, 0, 0, 0}, 1<<32 | 1},
		{[]byte{1, 0, 0, 0, 2, 0, 0, 0}, 4<<32 | 3},                    // lo 1,3; hi 1+3
		{[]byte{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0}, 0xffffffff << 32}, // lo wraps to 0; hi 0xffffffff+0
	} {
		if got := Fletcher64(tc.in); got != tc.want {
			t.Errorf("Fletcher64(% x) = %#x, want %#x", tc.in, got, tc.want)
		}
		if got := refFletcher64(tc.in); got != tc.want {
			t.Errorf("refFletcher64(% x) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

// TestPfnSBLayout checks the encoded block field by field against the
// offsets of struct nd_pfn_sb, and its checksum with the reference sum.
func TestPfnSBLayout(t *testing.T) {
	for _, size := range []int64{128 << 20, 256 << 20, 6 << 20} {
		b := NewPfnSB(size).Marshal()
		if len(b) != 4096 {
			t.Fatalf("block is %d bytes", len(b))
		}
		le := binary.LittleEndian
		if string(b[0:16]) != "NVDIMM_PFN_INFO\x00" {
			t.Errorf("signature %q", b[0:16])
		}
		for i := 16; i < 48; i++ {
			if b[i] != 0 {
				t.Fatalf("uuid/parent_uuid byte %d = %#x, want zero", i, b[i])
			}
		}
		fields := []struct {
			name string
			got  uint64
			want uint64
		}{
			{"flags", uint64(le.Uint32(b[48:])), 0},
			{"version_major", uint64(le.Uint16(b[52:])), 1},
			{"version_minor", uint64(le.Uint16(b[54:])), 4},
			{"dataoff", le.Uint64(b[56:]), 2 << 20},
			{"npfns", le.Uint64(b[64:]), uint64(size-(2<<20)) / 4096},
			{"mode", uint64(le.Uint32(b[72:])), 1},
			{"start_pad", uint64(le.Uint32(b[76:])), 0},
			{"end_trunc", uint64(le.Uint32(b[80:])), 0},
			{"align", uint64(le.Uint32(b[84:])), 2 << 20},
			{"page_size", uint64(le.Uint32(b[88:])), 4096},
			{"page_struct_size", uint64(le.Uint16(b[92:])), 64},
		}
		for _, f := range fields {
			if f.got != f.want {
				t.Errorf("size %d: %s = %d, want %d", size, f.name, f.got, f.want)
			}
		}
		for i := 94; i < 4088; i++ {
			if b[i] != 0 {
				t.Fatalf("padding byte %d = %#x", i, b[i])
			}
		}
		zeroed := append([]byte(nil), b...)
		clear(zeroed[4088:])
		if got, want := le.Uint64(b[4088:]), refFletcher64(zeroed); got != want {
			t.Errorf("checksum %#x, reference %#x", got, want)
		}
		sb, err := ParsePfnSB(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := sb.Validate(size); err != nil {
			t.Error(err)
		}
	}
}

func TestPfnSBCorrupt(t *testing.T) {
	good := NewPfnSB(128 << 20).Marshal()
	for _, off := range []int{0, 20, 56, 100, 4000, 4090} {
		b := append([]byte(nil), good...)
		b[off] ^= 0x40
		_, err := ParsePfnSB(b)
		if err == nil {
			t.Errorf("flipping byte %d: no error", off)
		}
		if off == 0 && !errors.Is(err, ErrNoPfnInfo) {
			t.Errorf("bad signature: %v", err)
		}
	}
	sb := NewPfnSB(128 << 20)
	sb.DataOff = 3 << 20 // not a multiple of align
	if err := sb.Validate(128 << 20); err == nil {
		t.Error("misaligned dataoff validated")
	}
	sb = NewPfnSB(128 << 20)
	sb.Mode = 7
	if err := sb.Validate(128 << 20); err == nil {
		t.Error("bad mode validated")
	}
}

func TestMBRRoundTrip(t *testing.T) {
	m := MBR{DiskID: 0xdeadbeef}
	m.Partitions[0] = Partition{Type: PartTypeLinux, StartLBA: 6144, Sectors: 256000}
	b := m.Marshal()
	if b[510] != 0x55 || b[511] != 0xaa || b[446+4] != 0x83 {
		t.Fatalf("bad MBR: sig % x type %#x", b[510:], b[450])
	}
	if got := binary.LittleEndian.Uint32(b[446+8:]); got != 6144 {
		t.Fatalf("start LBA %d", got)
	}
	p, err := ParseMBR(b)
	if err != nil {
		t.Fatal(err)
	}
	if *p != m {
		t.Fatalf("round trip: %+v != %+v", *p, m)
	}
	if _, err := ParseMBR(make([]byte, 512)); !errors.Is(err, ErrNoMBR) {
		t.Fatalf("blank sector: %v", err)
	}
}
