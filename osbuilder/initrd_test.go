package osbuilder

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

func readInitrd(t *testing.T, path string) []cpio.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 8)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	c, ok := DetectCompression(head)
	if !ok {
		t.Fatalf("%s: unknown compression % x", path, head)
	}
	f.Seek(0, io.SeekStart)
	zr, err := decompressor(c, f)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func content(t *testing.T, r cpio.Record) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInitrdRoundTrip writes a tree and reads it back with u-root's newc
// reader: same names in order, modes, contents, links and devices.
func TestInitrdRoundTrip(t *testing.T) {
	root := makeTree(t)
	for _, c := range []Compression{None, Gzip, Zstd, XZ} {
		t.Run(string(c), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "initrd")
			if err := BuildInitrd(context.Background(), InitrdOptions{Rootfs: root, Out: out, Compression: c, Epoch: testEpoch}); err != nil {
				t.Fatal(err)
			}
			recs := readInitrd(t, out)
			byName := map[string]cpio.Record{}
			var names []string
			for _, r := range recs {
				byName[r.Name] = r
				names = append(names, r.Name)
			}
			want := []string{"a", "a/b", "a/b/c", "a/b/c/data", "a/b/rel", "a/longlink", "a-b", "a-b/tool3", "dev",
				"dev/console", "dev/null", "dev/vda", "etc", "etc/resolv.conf", "init", "sbin", "sbin/init", "tmp",
				"usr", "usr/bin", "usr/bin/tool", "usr/bin/tool2", "var", "var/lib", "var/lib/osbuilder",
				"var/lib/osbuilder/devices"}
			if !equalStrings(names, want) {
				t.Fatalf("names:\n got %q\nwant %q", names, want)
			}
			checks := []struct {
				name string
				mode uint64
			}{
				{"a", sIFDIR | 0o755},
				{"tmp", sIFDIR | 0o1777},
				{"sbin/init", sIFREG | 0o755},
				{"a/b/c/data", sIFREG | 0o640},
				{"usr/bin/tool", sIFREG | 0o4755},
				{"init", sIFLNK | 0o777},
				{"dev/console", sIFCHR | 0o600},
				{"dev/null", sIFCHR | 0o666},
				{"dev/vda", sIFBLK | 0o660},
			}
			for _, ck := range checks {
				r := byName[ck.name]
				if r.Mode != ck.mode {
					t.Errorf("%s: mode %o, want %o", ck.name, r.Mode, ck.mode)
				}
				if r.Name != "dev/vda" && (r.UID != 0 || r.GID != 0) {
					t.Errorf("%s: owner %d:%d, want 0:0", ck.name, r.UID, r.GID)
				}
			}
			if r := byName["dev/console"]; r.Rmajor != 5 || r.Rminor != 1 {
				t.Errorf("dev/console: %d:%d, want 5:1", r.Rmajor, r.Rminor)
			}
			if r := byName["dev/vda"]; r.Rmajor != 254 || r.Rminor != 0 || r.GID != 6 {
				t.Errorf("dev/vda: %d:%d gid %d, want 254:0 gid 6", r.Rmajor, r.Rminor, r.GID)
			}
			if got := string(content(t, byName["init"])); got != "/sbin/init" {
				t.Errorf("init -> %q", got)
			}
			if got := string(content(t, byName["a/b/rel"])); got != "../../usr/bin/tool" {
				t.Errorf("a/b/rel -> %q", got)
			}
			if got := content(t, byName["a/b/c/data"]); len(got) != 70000 {
				t.Errorf("a/b/c/data: %d bytes", len(got))
			}
			if got := string(content(t, byName["sbin/init"])); got != "#!/bin/sh\necho init\n" {
				t.Errorf("sbin/init content %q", got)
			}
			// Hard links: one inode, nlink 3, content only with the last name.
			t1, t2, t3 := byName["usr/bin/tool"], byName["usr/bin/tool2"], byName["a-b/tool3"]
			if t1.Ino != t2.Ino || t1.Ino != t3.Ino || t1.NLink != 3 || t3.NLink != 3 {
				t.Errorf("hard links: ino %d %d %d nlink %d %d", t1.Ino, t2.Ino, t3.Ino, t1.NLink, t3.NLink)
			}
			if t3.FileSize != 0 || t1.FileSize != 0 || string(content(t, t2)) != "tool content" {
				t.Errorf("hard link content sizes %d %d %d", t3.FileSize, t1.FileSize, t2.FileSize)
			}
			// Inodes are renumbered in order, unique apart from links.
			seen := map[uint64]string{}
			for _, r := range recs {
				if prev, ok := seen[r.Ino]; ok && r.Mode&sIFMT != sIFREG {
					t.Errorf("%s shares inode %d with %s", r.Name, r.Ino, prev)
				}
				seen[r.Ino] = r.Name
				if r.Ino == 0 || r.Ino > uint64(len(recs)) {
					t.Errorf("%s: inode %d not renumbered", r.Name, r.Ino)
				}
				if r.MTime > testEpoch {
					t.Errorf("%s: mtime %d after the epoch", r.Name, r.MTime)
				}
			}
			if m := byName["etc/resolv.conf"].MTime; m != testEpoch-3600 {
				t.Errorf("etc/resolv.conf mtime %d, want %d (older than the epoch: kept)", m, testEpoch-3600)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestInitrdReproducible: same tree and epoch give the same bytes, also
// after the tree's timestamps change; another epoch gives other bytes.
func TestInitrdReproducible(t *testing.T) {
	root := makeTree(t)
	for _, c := range []Compression{Gzip, Zstd, XZ, None} {
		t.Run(string(c), func(t *testing.T) {
			dir := t.TempDir()
			build := func(name string, epoch int64) []byte {
				out := filepath.Join(dir, name)
				if err := BuildInitrd(context.Background(), InitrdOptions{Rootfs: root, Out: out, Compression: c, Epoch: epoch}); err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			a := build("a", testEpoch)
			now := time.Now()
			if err := os.Chtimes(filepath.Join(root, "sbin/init"), now, now); err != nil {
				t.Fatal(err)
			}
			b := build("b", testEpoch)
			if !bytes.Equal(a, b) {
				t.Fatalf("two builds differ (%d and %d bytes)", len(a), len(b))
			}
			if d := build("c", testEpoch-86400); bytes.Equal(a, d) {
				t.Fatal("a different SOURCE_DATE_EPOCH gave the same bytes")
			}
			if c == Gzip {
				// RFC 1952 header: no FNAME flag, MTIME zero.
				if a[3]&0x08 != 0 || !bytes.Equal(a[4:8], []byte{0, 0, 0, 0}) {
					t.Errorf("gzip header has a name or time: % x", a[:10])
				}
			}
		})
	}
}

// TestInitrdNoPartialOutput: a failed build leaves neither the output nor
// a temporary file.
func TestInitrdNoPartialOutput(t *testing.T) {
	root := makeTree(t)
	// A manifest device under a missing directory fails the build.
	if err := os.WriteFile(filepath.Join(root, "var/lib/osbuilder/devices"), []byte("nod /nodir/x 0600 0 0 c 1 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "initrd")
	err := BuildInitrd(context.Background(), InitrdOptions{Rootfs: root, Out: out, Epoch: testEpoch})
	if err == nil {
		t.Fatal("build with a bad manifest succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestPathLess(t *testing.T) {
	in := []string{"a-b", "a/b", "a", "ab", "a/b/c", "a.b", "b"}
	want := []string{"a", "a/b", "a/b/c", "a-b", "a.b", "ab", "b"}
	got := append([]string(nil), in...)
	sortPaths(got)
	if !equalStrings(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
}
