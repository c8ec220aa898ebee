package osbuilder

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func needTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if toolPath(n) == "" {
			t.Skipf("needs %s", n)
		}
	}
}

func buildImage(t *testing.T, opts ImageOptions) []byte {
	t.Helper()
	if opts.Epoch == 0 {
		opts.Epoch = testEpoch
	}
	if err := BuildImage(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(opts.Out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// extractFS writes the partition of a raw image to its own file.
func extractFS(t *testing.T, img []byte) string {
	t.Helper()
	m, err := ParseMBR(img[:512])
	if err != nil {
		t.Fatal(err)
	}
	p := m.Partitions[0]
	start, end := int64(p.StartLBA)*512, int64(p.StartLBA+p.Sectors)*512
	if end != int64(len(img)) {
		t.Fatalf("partition ends at %d, image at %d", end, len(img))
	}
	f := filepath.Join(t.TempDir(), "fs")
	if err := os.WriteFile(f, img[start:end], 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func debugfs(t *testing.T, fs, cmd string) string {
	t.Helper()
	out, err := exec.Command(toolPath("debugfs"), "-R", cmd, fs).Output()
	if err != nil {
		t.Fatalf("debugfs %s: %v", cmd, err)
	}
	return string(out)
}

func TestImageExt4DAX(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs", "e2fsck")
	root := makeTree(t)
	dir := t.TempDir()
	img := buildImage(t, ImageOptions{Rootfs: root, Out: filepath.Join(dir, "a.img")})

	if len(img)%(128<<20) != 0 {
		t.Fatalf("size %d is not a multiple of 128 MiB", len(img))
	}
	m, err := ParseMBR(img[:512])
	if err != nil {
		t.Fatal(err)
	}
	if p := m.Partitions[0]; p.Type != 0x83 || p.StartLBA*512 != 3<<20 || int64(p.StartLBA+p.Sectors)*512 != int64(len(img)) {
		t.Fatalf("MBR partition %+v", p)
	}
	sb, err := ParsePfnSB(img[4096:8192])
	if err != nil {
		t.Fatal(err)
	}
	if sb.DataOff != 2<<20 || sb.Mode != PfnModeRAM {
		t.Fatalf("pfn sb %+v", sb)
	}
	m2, err := ParseMBR(img[2<<20 : 2<<20+512])
	if err != nil {
		t.Fatal(err)
	}
	if p := m2.Partitions[0]; p.StartLBA*512 != 1<<20 || p.Sectors != m.Partitions[0].Sectors {
		t.Fatalf("second MBR partition %+v", p)
	}
	if magic := binary.LittleEndian.Uint16(img[3<<20+1024+0x38:]); magic != 0xef53 {
		t.Fatalf("no ext4 magic at 3 MiB: %#x", magic)
	}

	fs := extractFS(t, img)
	if out, err := exec.Command(toolPath("e2fsck"), "-fn", fs).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	st := debugfs(t, fs, "stat /dev/console")
	if !strings.Contains(st, "Type: character special") || !strings.Contains(st, "Mode:  0600") {
		t.Errorf("/dev/console:\n%s", st)
	}
	if out := debugfs(t, fs, "ls -l /dev"); !regexp.MustCompile(`20666 \(3\)\s+0\s+0\s+0\s.*null`).MatchString(out) ||
		!regexp.MustCompile(`60660 \(\d\)\s+0\s+6\s`).MatchString(out) {
		t.Errorf("ls -l /dev:\n%s", out)
	}
	if out := debugfs(t, fs, "stat /dev/vda"); !strings.Contains(out, "Device major/minor number: 254:00") &&
		!strings.Contains(out, "Device major/minor number: 254:0") {
		t.Errorf("/dev/vda:\n%s", out)
	}
	tool := debugfs(t, fs, "stat /usr/bin/tool")
	if !strings.Contains(tool, "Links: 3") || !strings.Contains(tool, "Mode:  04755") {
		t.Errorf("hard linked setuid tool:\n%s", tool)
	}
	if got := debugfs(t, fs, "cat /a-b/tool3"); got != "tool content" {
		t.Errorf("tool3 content %q", got)
	}
	if got := debugfs(t, fs, "stat /a/longlink"); !strings.Contains(got, "Type: symlink") {
		t.Errorf("long symlink:\n%s", got)
	}
	// Owners are root and no time is after the epoch, whoever built it.
	want := fmt.Sprintf("0x%08x:00000000", testEpoch)
	for _, p := range []string{"/", "/sbin/init", "/a/b/c/data", "/tmp", "/dev/console", "/init"} {
		out := debugfs(t, fs, "stat "+p)
		if !regexp.MustCompile(`User:\s+0\s+Group:\s+0\s`).MatchString(out) {
			t.Errorf("%s not owned by root:\n%s", p, out)
		}
		for _, f := range []string{" ctime: ", " atime: ", " mtime: ", "crtime: "} {
			if !strings.Contains(out, f+want) {
				t.Errorf("%s: %s is not the epoch:\n%s", p, strings.TrimSpace(f), out)
			}
		}
	}
	info, err := Inspect(context.Background(), filepath.Join(dir, "a.img"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Problems) > 0 || info.FSType != "ext4" || info.DAX == nil || !info.DAX.Valid || info.Init != "/init -> /sbin/init" {
		t.Fatalf("info: %+v dax %+v", info, info.DAX)
	}
}

func TestImageReproducible(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs", "mkfs.erofs")
	root := makeTree(t)
	dir := t.TempDir()
	for _, fs := range []Filesystem{Ext4, EROFS} {
		a := buildImage(t, ImageOptions{Rootfs: root, Out: filepath.Join(dir, "a"), FS: fs, AlignMiB: 2})
		time.Sleep(1100 * time.Millisecond) // a second later, for anything using the clock
		now := time.Now()
		if err := os.Chtimes(filepath.Join(root, "a/b"), now, now); err != nil {
			t.Fatal(err)
		}
		b := buildImage(t, ImageOptions{Rootfs: root, Out: filepath.Join(dir, "b"), FS: fs, AlignMiB: 2})
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two builds differ", fs)
		}
		c := buildImage(t, ImageOptions{Rootfs: root, Out: filepath.Join(dir, "c"), FS: fs, AlignMiB: 2, Epoch: testEpoch + 1})
		if bytes.Equal(a, c) {
			t.Errorf("%s: another epoch gave the same bytes", fs)
		}
	}
}

func TestImageEROFS(t *testing.T) {
	needTools(t, "mkfs.erofs")
	root := makeTree(t)
	out := filepath.Join(t.TempDir(), "e.img")
	img := buildImage(t, ImageOptions{Rootfs: root, Out: out, FS: EROFS, AlignMiB: 2})
	if len(img)%(2<<20) != 0 {
		t.Fatalf("size %d", len(img))
	}
	if magic := binary.LittleEndian.Uint32(img[3<<20+1024:]); magic != 0xe0f5e1e2 {
		t.Fatalf("no erofs magic at 3 MiB: %#x", magic)
	}
	if toolPath("fsck.erofs") != "" {
		fs := extractFS(t, img)
		if out, err := exec.Command(toolPath("fsck.erofs"), fs).CombinedOutput(); err != nil {
			t.Fatalf("fsck.erofs: %v\n%s", err, out)
		}
	}
	info, err := Inspect(context.Background(), out)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Problems) > 0 || info.FSType != "erofs" || !info.DAX.Valid || info.Init != "/init -> /sbin/init" {
		t.Fatalf("info %+v", info)
	}
	// The manifest (a regular file in the tree) is read back through the
	// erofs reader as info reads the provenance.
	f, _ := os.Open(out)
	defer f.Close()
	e, err := newEROFSReader(f, 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"var/lib/osbuilder/devices": "", "sbin/init": "#!/bin/sh\necho init\n", "a/b/rel": "../../usr/bin/tool"} {
		in, err := e.lookup(p)
		if err != nil {
			t.Fatalf("lookup %s: %v", p, err)
		}
		b, err := e.data(in)
		if err != nil {
			t.Fatal(err)
		}
		disk, _ := os.ReadFile(filepath.Join(root, p))
		if want == "" {
			want = string(disk)
		}
		if string(b) != want {
			t.Errorf("%s: %q, want %q", p, b, want)
		}
	}
	in, err := e.lookup("a/b/c/data")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := e.data(in); err != nil || len(b) != 70000 {
		t.Errorf("a/b/c/data: %d bytes, %v", len(b), err)
	}
	if _, err := e.lookup("a/nope"); err == nil {
		t.Error("found a missing file")
	}
	// Device nodes from the manifest, patched from placeholders.
	for p, want := range map[string][3]uint32{"dev/console": {sIFCHR | 0o600, 5, 1}, "dev/null": {sIFCHR | 0o666, 1, 3}, "dev/vda": {sIFBLK | 0o660, 254, 0}} {
		in, err := e.lookup(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		var b [4]byte
		f.ReadAt(b[:], in.pos+16)
		rdev := binary.LittleEndian.Uint32(b[:])
		if uint32(in.mode) != want[0] || rdev != want[1]<<8|want[2] {
			t.Errorf("%s: mode %o rdev %#x, want %o %d:%d", p, in.mode, rdev, want[0], want[1], want[2])
		}
	}
	if toolPath("dump.erofs") != "" {
		fs := extractFS(t, img)
		out, err := exec.Command(toolPath("dump.erofs"), "--ls", "--path=/dev", fs).CombinedOutput()
		if err != nil || !regexp.MustCompile(`\d+\s+3\s+console`).Match(out) || !regexp.MustCompile(`\d+\s+4\s+vda`).Match(out) {
			t.Errorf("dump.erofs --ls /dev: %v\n%s", err, out)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestImageNoDAXQcow2(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs", "qemu-img")
	root := makeTree(t)
	dir := t.TempDir()
	raw := buildImage(t, ImageOptions{Rootfs: root, Out: filepath.Join(dir, "plain.img"), NoDAX: true, AlignMiB: 8})
	m, _ := ParseMBR(raw[:512])
	if m.Partitions[0].StartLBA*512 != 1<<20 {
		t.Fatalf("no-dax partition at %d", m.Partitions[0].StartLBA*512)
	}
	if !bytes.Equal(raw[4096:8192], make([]byte, 4096)) {
		t.Fatal("no-dax image has data at 4096")
	}
	q := filepath.Join(dir, "disk.qcow2")
	buildImage(t, ImageOptions{Rootfs: root, Out: q, NoDAX: true, AlignMiB: 8, Format: Qcow2})
	out, err := exec.Command("qemu-img", "info", "--output=json", q).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"format": "qcow2"`) || !strings.Contains(string(out), fmt.Sprintf(`"virtual-size": %d`, len(raw))) {
		t.Fatalf("qemu-img info:\n%s", out)
	}
	info, err := Inspect(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Problems) > 0 || info.Format != "qcow2" || info.DAX != nil || info.FSType != "ext4" {
		t.Fatalf("info %+v", info)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

// TestImageExt4Estimate: with --align 2 the filesystem is as small as the
// estimate; it must still hold a tree of many files and a large one.
func TestImageExt4Estimate(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs", "e2fsck")
	root := t.TempDir()
	big := make([]byte, 24<<20)
	rand.Read(big)
	if err := os.WriteFile(filepath.Join(root, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		d := filepath.Join(root, fmt.Sprintf("dir%02d", i))
		os.Mkdir(d, 0o755)
		for j := range 40 {
			name := filepath.Join(d, fmt.Sprintf("file-with-a-long-name-%03d", j))
			if err := os.WriteFile(name, big[:(i*j*97)%20000], 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := filepath.Join(t.TempDir(), "tight.img")
	img := buildImage(t, ImageOptions{Rootfs: root, Out: out, AlignMiB: 2})
	fs := extractFS(t, img)
	if o, err := exec.Command(toolPath("e2fsck"), "-fn", fs).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, o)
	}
	if got := debugfs(t, fs, "cat /big"); got != string(big) {
		t.Fatal("big file content differs")
	}
	t.Logf("tree of %d MiB in a %d MiB image", (len(big)>>20)+1, len(img)>>20)
}

func TestImageMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	old := sbinDirs
	sbinDirs = nil
	defer func() { sbinDirs = old }()
	dir := t.TempDir()
	err := BuildImage(context.Background(), ImageOptions{Rootfs: makeTree(t), Out: filepath.Join(dir, "x.img"), Epoch: testEpoch})
	if err == nil || !strings.Contains(err.Error(), "e2fsprogs") {
		t.Fatalf("want an error naming e2fsprogs, got %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestInspectCorrupt(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	root := makeTree(t)
	dir := t.TempDir()
	good := buildImage(t, ImageOptions{Rootfs: root, Out: filepath.Join(dir, "good.img"), AlignMiB: 4})
	for _, tc := range []struct {
		name string
		off  int
	}{
		{"pfn checksum", 4096 + 200},
		{"pfn signature", 4096 + 3},
		{"second MBR", 2<<20 + 510},
		{"ext4 magic", 3<<20 + 1024 + 0x38},
	} {
		b := append([]byte(nil), good...)
		b[tc.off] ^= 0x5a
		p := filepath.Join(dir, "bad.img")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		info, err := Inspect(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if len(info.Problems) == 0 {
			t.Errorf("%s corrupted: no problem reported", tc.name)
		}
	}
	// A truncated initrd is reported too.
	ir := filepath.Join(dir, "initrd")
	if err := BuildInitrd(context.Background(), InitrdOptions{Rootfs: root, Out: ir, Epoch: testEpoch}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(ir)
	os.WriteFile(ir, b[:len(b)/2], 0o644)
	info, err := Inspect(context.Background(), ir)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Problems) == 0 {
		t.Error("truncated initrd: no problem reported")
	}
	_ = io.EOF
}
