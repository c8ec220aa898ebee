package osbuilder

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	rootfsbuilder "github.com/kguest/kguest/rootfs-builder"
)

// bootKernel finds a distribution x86_64 kernel and its modules for the
// boot test: $OSBUILDER_TEST_KERNEL and $OSBUILDER_TEST_MODULES, else the
// Debian kernel the e2e benchmarks unpack into $KGUEST_CACHE.
func bootKernel(t *testing.T) (kernel, modules string) {
	t.Helper()
	if k := os.Getenv("OSBUILDER_TEST_KERNEL"); k != "" {
		return k, os.Getenv("OSBUILDER_TEST_MODULES")
	}
	cache := os.Getenv("KGUEST_CACHE")
	if cache == "" {
		cache = "/var/cache/kguest"
	}
	ks, _ := filepath.Glob(filepath.Join(cache, "debian-kernel/*/boot/vmlinuz-*"))
	for _, k := range ks {
		ver := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		mods := filepath.Join(filepath.Dir(filepath.Dir(k)), "lib/modules", ver)
		if _, err := os.Stat(mods); err == nil {
			return k, mods
		}
	}
	return "", ""
}

// TestBootDAX boots the images under QEMU (TCG) with a real kernel given
// the image as an ACPI NVDIMM: the kernel must accept the pfn info block
// (a pfn device in mode "ram" with 2 MiB align; the other is the idle seed), find pmem0p1 through the second MBR
// and mount the filesystem with -o dax; the initrd, from the same rootfs,
// must give init a working /dev/console.
func TestBootDAX(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("x86_64 only")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("needs qemu-system-x86_64")
	}
	kernel, modules := bootKernel(t)
	if kernel == "" || modules == "" {
		t.Skip("needs a kernel with NVDIMM modules: set OSBUILDER_TEST_KERNEL and OSBUILDER_TEST_MODULES")
	}
	if rootfsbuilder.CheckStaticELF("/bin/busybox", "amd64") != nil {
		t.Skip("needs busybox-static")
	}
	for _, fsType := range []Filesystem{Ext4, EROFS} {
		t.Run(string(fsType), func(t *testing.T) {
			if toolPath("mkfs."+string(fsType)) == "" {
				t.Skipf("needs mkfs.%s", fsType)
			}
			bootDAX(t, qemu, kernel, modules, fsType)
		})
	}
}

func bootDAX(t *testing.T, qemu, kernel, modules string, fsType Filesystem) {
	dir := t.TempDir()
	mods := []string{"libnvdimm", "nd_btt", "nd_pmem", "nfit", "crc32c_generic", "libcrc32c", "crc16", "mbcache", "jbd2", "ext4", "erofs"}
	modDir := filepath.Join(dir, "mods", "t")
	os.MkdirAll(modDir, 0o755)
	found := map[string]string{}
	filepath.WalkDir(modules, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			found[strings.TrimSuffix(d.Name(), ".ko")] = p
		}
		return nil
	})
	var load []string
	for _, m := range mods {
		if p, ok := found[m]; ok {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(modDir, m+".ko"), b, 0o644)
			load = append(load, m)
		}
	}
	extra := filepath.Join(dir, "extra")
	os.MkdirAll(filepath.Join(extra, "bin"), 0o755)
	os.Symlink("/sbin/init", filepath.Join(extra, "bin/sh"))
	os.Symlink("/sbin/init", filepath.Join(extra, "bin/busybox"))
	script := fmt.Sprintf(`bb=/bin/busybox
$bb mkdir -p /proc /sys /mnt
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb echo "console: $($bb stat -c '%%F %%t:%%T %%a' /dev/console)"
$bb mount -t devtmpfs dev /dev
for m in %s; do $bb insmod /lib/modules/t/$m.ko 2>/dev/null; done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/pmem0p1 ] && break; $bb sleep 1; done
for d in /sys/bus/nd/devices/pfn*; do $bb echo "pfn: $($bb cat $d/mode) $($bb cat $d/align)"; done
$bb mount -t %s -o dax,ro /dev/pmem0p1 /mnt && $bb echo "mounted: $($bb grep pmem0p1 /proc/mounts)"
$bb echo "provenance: $($bb grep agent_init /mnt/var/lib/osbuilder/osbuilder.yaml)"
$bb echo "root console: $($bb stat -c '%%F %%t:%%T %%a' /mnt/dev/console)"
$bb poweroff -f
`, strings.Join(load, " "), fsType)
	os.WriteFile(filepath.Join(extra, "check.sh"), []byte(script), 0o644)
	root := filepath.Join(dir, "rootfs")
	err := rootfsbuilder.Build(context.Background(), rootfsbuilder.Options{
		Agent: "/bin/busybox", Out: root, AgentInit: true, Modules: filepath.Join(dir, "mods", "t"),
		Extras: []rootfsbuilder.Extra{{Src: filepath.Join(extra, "bin"), Dst: "/bin"}, {Src: filepath.Join(extra, "check.sh"), Dst: "/etc/check.sh"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	initrd, img := filepath.Join(dir, "initrd"), filepath.Join(dir, "disk.img")
	if err := BuildInitrd(context.Background(), InitrdOptions{Rootfs: root, Out: initrd, Epoch: testEpoch}); err != nil {
		t.Fatal(err)
	}
	if err := BuildImage(context.Background(), ImageOptions{Rootfs: root, Out: img, FS: fsType, Epoch: testEpoch}); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(img)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu,
		"-machine", "pc,nvdimm=on,accel=tcg", "-m", "512M,slots=2,maxmem=2G", "-smp", "1",
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 rdinit=/bin/sh quiet panic=-1 -- /etc/check.sh",
		"-object", fmt.Sprintf("memory-backend-file,id=mem1,share=off,readonly=on,mem-path=%s,size=%d", img, st.Size()),
		"-device", "nvdimm,id=nv1,memdev=mem1,unarmed=on")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("qemu: %v\n%s", err, out.String())
	}
	log := out.String()
	for _, l := range strings.Split(log, "\n") {
		for _, p := range []string{"console: ", "pfn: ", "mounted: ", "provenance: "} { // "root console: " too
			if i := strings.Index(l, p); i >= 0 {
				t.Log(strings.TrimSpace(l[i:]))
			}
		}
	}
	for _, want := range []string{
		"console: character special file 5:1 600",
		"pfn: ram 2097152",
		"mounted: /dev/pmem0p1 /mnt " + string(fsType) + " ro,",
		"provenance: agent_init: true",
		"root console: character special file 5:1 600",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("console lacks %q:\n%s", want, log)
		}
	}
	if !strings.Contains(log, ",dax") && !strings.Contains(log, "dax=always") {
		t.Errorf("not mounted with dax:\n%s", log)
	}
}
