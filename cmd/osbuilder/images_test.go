package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnprivileged runs the Check of the image builders as user nobody:
// rootfs, two identical initrds with a console device, and a DAX ext4 image
// that e2fsck accepts, from a binary in a directory nobody cannot write.
func TestUnprivileged(t *testing.T) {
	if testing.Short() {
		t.Skip("builds osbuilder and runs it as nobody")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to switch to user nobody")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	for _, tool := range []string{"cpio", "e2fsck", "mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	// t.TempDir's parent is private to root; nobody needs to traverse.
	base, err := os.MkdirTemp("", "osbuilder-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "bin")
	os.Mkdir(bin, 0o755)
	osb := filepath.Join(bin, "osbuilder")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X github.com/kguest/kguest/internal/version.Version=9.9.9-test", "-o", osb, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	work := filepath.Join(base, "work")
	os.Mkdir(work, 0o755)
	if err := os.Chown(work, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	asNobody := func(env []string, name string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", name}, args...)...)
		cmd.Dir = work
		cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/nonexistent"}, env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v as nobody: %v\n%s", name, args, err, stderr.String())
		}
		return out
	}
	epoch := []string{"SOURCE_DATE_EPOCH=1700000000"}
	// The static, CGO-free osbuilder stands in for the agent: it answers
	// --version, which the provenance records.
	asNobody(epoch, osb, "rootfs", "--agent", osb, "-o", "rootfs")
	asNobody(epoch, osb, "initrd", "--rootfs", "rootfs", "-o", "a.img")
	asNobody(epoch, osb, "initrd", "--rootfs", "rootfs", "-o", "b.img")
	a, _ := os.ReadFile(filepath.Join(work, "a.img"))
	b, _ := os.ReadFile(filepath.Join(work, "b.img"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatal("two initrds differ")
	}
	list := asNobody(nil, "/bin/sh", "-c", "zcat a.img | cpio -itv")
	var haveInit, haveConsole bool
	for _, l := range strings.Split(string(list), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		switch {
		case strings.HasSuffix(l, " init -> /sbin/init"):
			haveInit = true
		case f[len(f)-1] == "dev/console" && strings.HasPrefix(f[0], "c"):
			haveConsole = true
		}
	}
	if !haveInit || !haveConsole {
		t.Fatalf("cpio -itv: init %v, dev/console %v\n%s", haveInit, haveConsole, list)
	}
	asNobody(epoch, osb, "image", "--rootfs", "rootfs", "-o", "disk.img")
	img, _ := os.ReadFile(filepath.Join(work, "disk.img"))
	if len(img) == 0 || len(img)%(128<<20) != 0 {
		t.Fatalf("image size %d", len(img))
	}
	if string(img[4096:4096+16]) != "NVDIMM_PFN_INFO\x00" || img[510] != 0x55 || img[2<<20+510] != 0x55 {
		t.Fatal("image headers missing")
	}
	asNobody(nil, "e2fsck", "-fn", "disk.img?offset=3145728")
	info := string(asNobody(nil, osb, "info", "disk.img"))
	for _, want := range []string{"dax:          valid", "filesystem:   ext4", "version: 9.9.9-test", "init:         /init -> /sbin/init"} {
		if !strings.Contains(info, want) {
			t.Errorf("info lacks %q:\n%s", want, info)
		}
	}
	// ext4 owners are root although nobody built it.
	ls := string(asNobody(nil, "debugfs", "-R", "ls -l /sbin", "disk.img?offset=3145728"))
	if !strings.Contains(ls, "100755 (1)      0      0") {
		t.Errorf("/sbin/init not root-owned:\n%s", ls)
	}
}
