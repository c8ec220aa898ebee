package rootfsbuilder

import (
	"debug/elf"
	"fmt"
	"runtime"
)

// Arch is a target architecture as osbuilder names it (GOARCH spelling).
type Arch string

var archMachines = map[Arch]elf.Machine{
	"amd64":   elf.EM_X86_64,
	"arm64":   elf.EM_AARCH64,
	"s390x":   elf.EM_S390,
	"ppc64le": elf.EM_PPC64,
	"riscv64": elf.EM_RISCV,
}

var archAliases = map[string]Arch{
	"x86_64":  "amd64",
	"aarch64": "arm64",
	"ppc64el": "ppc64le",
}

// ParseArch accepts GOARCH or uname -m spellings; "" means the host.
func ParseArch(s string) (Arch, error) {
	if s == "" {
		return Arch(runtime.GOARCH), nil
	}
	if a, ok := archAliases[s]; ok {
		return a, nil
	}
	if _, ok := archMachines[Arch(s)]; ok {
		return Arch(s), nil
	}
	return "", fmt.Errorf("unknown architecture %q (want amd64/x86_64, arm64/aarch64, s390x, ppc64le or riscv64)", s)
}

// ArchOf returns the architecture of an ELF machine, or "" if unknown.
func ArchOf(m elf.Machine) Arch {
	for a, am := range archMachines {
		if am == m {
			return a
		}
	}
	return ""
}

// CheckStaticELF checks that path is an executable ELF for arch with no
// program interpreter, i.e. one that runs as PID 1 in a rootfs without libc.
func CheckStaticELF(path string, arch Arch) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("%s is an ELF %s, not an executable", path, f.Type)
	}
	want, ok := archMachines[arch]
	if !ok {
		return fmt.Errorf("unknown target architecture %q", arch)
	}
	if f.Machine != want {
		got := string(ArchOf(f.Machine))
		if got == "" {
			got = f.Machine.String()
		}
		return fmt.Errorf("%s is built for %s, but the target architecture is %s (use --arch or rebuild it with GOARCH=%s)", path, got, arch, arch)
	}
	if arch == "s390x" && f.ByteOrder.String() != "BigEndian" {
		return fmt.Errorf("%s: s390x binary is not big-endian", path)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp := make([]byte, p.Filesz)
			_, _ = p.ReadAt(interp, 0)
			return fmt.Errorf("%s is dynamically linked (interpreter %q); the rootfs has no libc, build it static (e.g. make agent)", path, trimNul(interp))
		}
	}
	return nil
}

func trimNul(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
