package kernelconfig

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// debianSource is Debian's linux-source-6.1 package's tarball.
const debianSource = "/usr/src/linux-source-6.1.tar.xz"

func openDebianSource(t *testing.T) *Source {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: resolving three kernel configs with Kconfig takes up to a minute")
	}
	if _, err := os.Stat(debianSource); err != nil {
		t.Skipf("needs the kernel source tarball %s (apt-get install linux-source-6.1): %v", debianSource, err)
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skipf("needs make: %v", err)
	}
	src, err := OpenSource(context.Background(), CacheDir(), debianSource, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestGenerateDebian61 generates and verifies every architecture's config
// from linux-source-6.1 with the kernel's own Kconfig (no compile).
func TestGenerateDebian61(t *testing.T) {
	src := openDebianSource(t)
	common := []string{"VIRTIO_VSOCKETS", "VSOCKETS_LOOPBACK", "VIRTIO_CONSOLE", "OVERLAY_FS", "CGROUPS", "SECCOMP",
		"SECCOMP_FILTER", "CGROUP_BPF", "MEMCG", "VIRTIO_BLK", "VIRTIO_NET", "EROFS_FS", "9P_FS", "VIRTIO_FS",
		"BLK_DEV_INITRD", "DEVTMPFS"}
	want := map[string][]string{
		"x86_64": append([]string{"LIBNVDIMM", "FS_DAX", "PVH", "ACPI", "ACPI_NFIT", "VIRTIO_MMIO_CMDLINE_DEVICES", "SERIAL_8250_CONSOLE", "VIRTIO_MEM"}, common...),
		"arm64":  append([]string{"LIBNVDIMM", "FS_DAX", "ARM_GIC_V3", "PCI_HOST_GENERIC", "SERIAL_AMBA_PL011_CONSOLE", "ARM_PSCI_FW", "VIRTIO_MEM"}, common...),
		"s390x":  append([]string{"S390_GUEST", "SCLP_CONSOLE", "SCLP_VT220_CONSOLE"}, common...),
	}
	for _, name := range ArchNames() {
		t.Run(name, func(t *testing.T) {
			arch, _ := LookupArch(name)
			if !arch.Native() {
				if _, err := exec.LookPath(arch.CrossCompile + "gcc"); err != nil {
					t.Skipf("needs the cross compiler %sgcc (Kconfig probes it): %v", arch.CrossCompile, err)
				}
			}
			cfg, err := Generate(context.Background(), &Options{Arch: arch, Source: src, CacheDir: CacheDir()})
			if err != nil {
				t.Fatal(err)
			}
			for _, sym := range want[name] {
				if v := cfg.Values.Value(sym); v != "y" {
					t.Errorf("CONFIG_%s=%s, want y", sym, v)
				}
			}
			for _, sym := range []string{"MODULES", "DEBUG_INFO", "KALLSYMS_ALL", "SOUND", "USB_SUPPORT", "DRM", "WLAN"} {
				if v := cfg.Values.Value(sym); v != "n" {
					t.Errorf("CONFIG_%s=%s, want it off", sym, v)
				}
			}
			if name == "s390x" {
				for _, sym := range []string{"LIBNVDIMM", "FS_DAX", "ACPI"} {
					if v := cfg.Values.Value(sym); v != "n" {
						t.Errorf("s390x: CONFIG_%s=%s, want n", sym, v)
					}
				}
			}
			y, _ := cfg.Values.Count()
			t.Logf("%s: %d requested, %d enabled", name, len(cfg.Request.Entries), y)
		})
	}
}

// TestGenerateImpossible asks for ACPI on s390x, which has none.
func TestGenerateImpossible(t *testing.T) {
	src := openDebianSource(t)
	arch, _ := LookupArch("s390x")
	if _, err := exec.LookPath(arch.CrossCompile + "gcc"); err != nil {
		t.Skipf("needs the cross compiler %sgcc: %v", arch.CrossCompile, err)
	}
	frag := mustFragment(t, "acpi.conf", "CONFIG_ACPI=y\n")
	_, err := Generate(context.Background(), &Options{Arch: arch, Source: src, CacheDir: CacheDir(), Extra: []*Fragment{frag}})
	if err == nil || !strings.Contains(err.Error(), "CONFIG_ACPI: asked for y, got n (from acpi.conf:1)") {
		t.Fatalf("got %v, want an error naming CONFIG_ACPI", err)
	}
	t.Log(err)
}
