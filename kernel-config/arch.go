package kernelconfig

import (
	"fmt"
	"runtime"
	"sort"
)

// Arch describes how to configure and build the kernel for one guest
// architecture.
type Arch struct {
	// Name is the architecture as osbuilder and the tests spell it.
	Name string
	// KArch is the kernel's ARCH= value.
	KArch string
	// SrcArch is the directory under arch/ in the kernel tree.
	SrcArch string
	// GOARCH is the Go name, used to tell whether a cross compiler is needed.
	GOARCH string
	// CrossCompile is the Debian cross toolchain prefix.
	CrossCompile string
	// Images are the make targets, relative to the build dir once built.
	Images []Image
}

// Image is one boot artifact of a kernel build.
type Image struct {
	// Name is the artifact's base name (vmlinux, bzImage, Image).
	Name string
	// Target is the make target that produces it.
	Target string
	// Path is where the build leaves it, relative to the O= directory.
	Path string
}

var arches = map[string]*Arch{
	"x86_64": {
		Name: "x86_64", KArch: "x86_64", SrcArch: "x86", GOARCH: "amd64",
		CrossCompile: "x86_64-linux-gnu-",
		Images: []Image{
			{Name: "bzImage", Target: "bzImage", Path: "arch/x86/boot/bzImage"},
			{Name: "vmlinux", Target: "vmlinux", Path: "vmlinux"},
		},
	},
	"arm64": {
		Name: "arm64", KArch: "arm64", SrcArch: "arm64", GOARCH: "arm64",
		CrossCompile: "aarch64-linux-gnu-",
		Images: []Image{
			{Name: "Image", Target: "Image", Path: "arch/arm64/boot/Image"},
			{Name: "vmlinux", Target: "vmlinux", Path: "vmlinux"},
		},
	},
	"s390x": {
		Name: "s390x", KArch: "s390", SrcArch: "s390", GOARCH: "s390x",
		CrossCompile: "s390x-linux-gnu-",
		Images: []Image{
			{Name: "bzImage", Target: "bzImage", Path: "arch/s390/boot/bzImage"},
			{Name: "vmlinux", Target: "vmlinux", Path: "vmlinux"},
		},
	},
}

// LookupArch returns the architecture named name (x86_64, arm64, s390x;
// amd64 and aarch64 are accepted as aliases).
func LookupArch(name string) (*Arch, error) {
	switch name {
	case "amd64":
		name = "x86_64"
	case "aarch64":
		name = "arm64"
	case "s390":
		name = "s390x"
	}
	a, ok := arches[name]
	if !ok {
		return nil, fmt.Errorf("unknown architecture %q (want one of %v)", name, ArchNames())
	}
	return a, nil
}

// ArchNames lists the supported architectures.
func ArchNames() []string {
	var n []string
	for k := range arches {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Native reports whether the host can build for a without a cross compiler.
func (a *Arch) Native() bool { return runtime.GOARCH == a.GOARCH }

// MakeVars are the ARCH= and CROSS_COMPILE= arguments for make.
func (a *Arch) MakeVars() []string {
	v := []string{"ARCH=" + a.KArch}
	if !a.Native() {
		v = append(v, "CROSS_COMPILE="+a.CrossCompile)
	}
	return v
}
