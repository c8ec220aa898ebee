// Package artifacts builds what the end-to-end tests and benchmarks boot,
// with the project's own commands (make agent, osbuilder kernel, osbuilder
// rootfs/initrd/image), cached by content under $KGUEST_CACHE/e2e so a rerun
// with no change boots in seconds.
package artifacts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// KernelSource is Debian's linux-source-6.1 tarball.
var KernelSource = "/usr/src/linux-source-6.1.tar.xz"

// CacheDir is where kernels and e2e artifacts are kept.
func CacheDir() string {
	if d := os.Getenv("KGUEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/kguest"
}

// RepoRoot finds the module root (the directory with go.mod) above the
// working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Log receives progress lines (build steps and their durations).
var Log = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func run(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out.String(), 40))
	}
	return nil
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// GoArch maps the project's arch names to GOARCH.
func GoArch(arch string) string {
	switch arch {
	case "x86_64":
		return "amd64"
	}
	return arch
}

// HostArch is the host in the project's naming.
func HostArch() string {
	if runtime.GOARCH == "amd64" {
		return "x86_64"
	}
	return runtime.GOARCH
}

var crossCC = map[string]string{
	"arm64":  "aarch64-linux-gnu-gcc",
	"s390x":  "s390x-linux-gnu-gcc",
	"x86_64": "x86_64-linux-gnu-gcc",
}

// Tools are the project's binaries for one guest architecture.
type Tools struct {
	Root      string
	Agent     string // bin/kata-agent for the guest arch
	Osbuilder string // bin/osbuilder (host)
	AgentCtl  string // bin/agent-ctl (host)
}

var (
	toolsMu    sync.Mutex
	toolsCache = map[string]*Tools{}
)

// Build runs `make agent osbuilder agent-ctl` once per process (and per arch:
// a cross-built agent goes to bin/ARCH/ without seccomp, whose static library
// Debian ships only for the host).
func Build(ctx context.Context, arch string) (*Tools, error) {
	toolsMu.Lock()
	defer toolsMu.Unlock()
	if t, ok := toolsCache[arch]; ok {
		return t, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	t := &Tools{Root: root,
		Agent:     filepath.Join(root, "bin", "kata-agent"),
		Osbuilder: filepath.Join(root, "bin", "osbuilder"),
		AgentCtl:  filepath.Join(root, "bin", "agent-ctl"),
	}
	bindir := filepath.Join("bin", arch)
	if arch != HostArch() {
		t.Agent = filepath.Join(root, bindir, "kata-agent")
	}
	start := time.Now()
	if os.Getenv("KGUEST_E2E_NO_BUILD") == "" {
		if err := run(ctx, root, nil, "make", "-s", "agent", "osbuilder", "agent-ctl"); err != nil {
			return nil, err
		}
		if arch != HostArch() {
			triplet := strings.TrimSuffix(crossCC[arch], "-gcc")
			if _, err := os.Stat(filepath.Join("/usr", triplet, "include")); err != nil {
				pkg := map[string]string{"arm64": "libc6-dev-arm64-cross", "s390x": "libc6-dev-s390x-cross", "x86_64": "libc6-dev-amd64-cross"}[arch]
				return nil, fmt.Errorf("cross-building the agent for %s needs %s and the C library for it (apt-get install %s %s)", arch, crossCC[arch], "gcc-"+triplet, pkg)
			}
			env := []string{"GOARCH=" + GoArch(arch), "CC=" + crossCC[arch]}
			if err := run(ctx, root, env, "make", "-s", "agent", "BINDIR="+bindir, "SECCOMP=no"); err != nil {
				return nil, err
			}
		}
		Log("artifacts: built agent and tools for %s in %s", arch, time.Since(start).Round(time.Millisecond))
	}
	for _, p := range []string{t.Agent, t.Osbuilder} {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	toolsCache[arch] = t
	return t, nil
}

// Kernel holds the paths of a built guest kernel.
type Kernel struct {
	Dir  string
	Boot string // what QEMU's -kernel takes for this arch
	Size int64  // size of Boot
}

// BuildKernel runs `osbuilder kernel` (which caches by source and config).
func BuildKernel(ctx context.Context, t *Tools, arch string) (*Kernel, error) {
	dir := filepath.Join(CacheDir(), "e2e", "kernel-"+arch)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := run(ctx, t.Root, nil, t.Osbuilder, "kernel", "--arch", arch, "--src", KernelSource, "-o", dir); err != nil {
		return nil, err
	}
	Log("artifacts: kernel %s ready in %s", arch, time.Since(start).Round(time.Millisecond))
	var names []string
	switch arch {
	case "x86_64":
		// An uncompressed ELF vmlinux boots through PVH: no decompression.
		names = []string{"vmlinux", "bzImage"}
		if os.Getenv("KGUEST_E2E_BZIMAGE") != "" {
			names = []string{"bzImage"}
		}
	case "arm64":
		names = []string{"Image"}
	default:
		names = []string{"bzImage", "vmlinux"}
	}
	for _, n := range names {
		// The names are symlinks to the versioned files, shared with
		// every other run on this host: one built from another kernel
		// config may repoint them while this one's VMs boot.
		p, err := filepath.EvalSymlinks(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		if st, err := os.Stat(p); err == nil {
			return &Kernel{Dir: dir, Boot: p, Size: st.Size()}, nil
		}
	}
	return nil, fmt.Errorf("osbuilder kernel wrote none of %v in %s", names, dir)
}

// Extra is a file put into the rootfs (osbuilder rootfs --extra SRC:DST).
type Extra struct {
	Src, Dst string
}

// Image is a built initrd or disk image.
type Image struct {
	Path      string
	Size      int64
	BuildTime time.Duration // time of the last real build (0 when cached)
	Cached    bool
}

// RootfsOptions selects what goes into the guest's rootfs.
type RootfsOptions struct {
	Extras     []Extra
	DebugShell bool
}

func hashFiles(h io.Writer, paths ...string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00", filepath.Base(p))
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (o RootfsOptions) key(t *Tools, kind string, extraArgs ...string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%v\x00%v\x00", kind, o.DebugShell, extraArgs)
	if err := hashFiles(h, t.Agent, t.Osbuilder); err != nil {
		return "", err
	}
	ex := append([]Extra(nil), o.Extras...)
	sort.Slice(ex, func(i, j int) bool { return ex[i].Dst < ex[j].Dst })
	for _, e := range ex {
		fmt.Fprintf(h, "%s\x00", e.Dst)
		if err := hashFiles(h, e.Src); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func (o RootfsOptions) rootfs(ctx context.Context, t *Tools, arch, dir string) error {
	args := []string{"rootfs", "--agent", t.Agent, "--arch", arch, "-o", dir}
	for _, e := range o.Extras {
		args = append(args, "--extra", e.Src+":"+e.Dst)
	}
	if o.DebugShell {
		args = append(args, "--debug-shell")
	}
	return run(ctx, t.Root, nil, t.Osbuilder, args...)
}

// cached builds out (via build, into a temp file) unless it exists.
func cached(out string, build func(tmp string) error) (*Image, error) {
	if st, err := os.Stat(out); err == nil {
		return &Image{Path: out, Size: st.Size(), Cached: true}, nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, err
	}
	tmp := out + ".tmp"
	os.Remove(tmp)
	start := time.Now()
	if err := build(tmp); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	d := time.Since(start)
	if err := os.Rename(tmp, out); err != nil {
		return nil, err
	}
	st, err := os.Stat(out)
	if err != nil {
		return nil, err
	}
	Log("artifacts: built %s (%d KiB) in %s", out, st.Size()>>10, d.Round(time.Millisecond))
	return &Image{Path: out, Size: st.Size(), BuildTime: d}, nil
}

// BuildInitrd makes a gzip initrd with `osbuilder rootfs` + `osbuilder initrd`.
func BuildInitrd(ctx context.Context, t *Tools, arch string, o RootfsOptions, compress string) (*Image, error) {
	if compress == "" {
		compress = "gzip"
	}
	key, err := o.key(t, "initrd", compress)
	if err != nil {
		return nil, err
	}
	out := filepath.Join(CacheDir(), "e2e", fmt.Sprintf("initrd-%s-%s.img", arch, key))
	return cached(out, func(tmp string) error {
		dir, err := os.MkdirTemp("", "kguest-rootfs")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		rootfs := filepath.Join(dir, "rootfs")
		if err := o.rootfs(ctx, t, arch, rootfs); err != nil {
			return err
		}
		return run(ctx, t.Root, nil, t.Osbuilder, "initrd", "--rootfs", rootfs, "--compress", compress, "-o", tmp)
	})
}

// BuildImage makes a DAX-capable ext4 disk image with `osbuilder image`.
func BuildImage(ctx context.Context, t *Tools, arch string, o RootfsOptions) (*Image, error) {
	key, err := o.key(t, "image")
	if err != nil {
		return nil, err
	}
	out := filepath.Join(CacheDir(), "e2e", fmt.Sprintf("image-%s-%s.img", arch, key))
	return cached(out, func(tmp string) error {
		dir, err := os.MkdirTemp("", "kguest-rootfs")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		rootfs := filepath.Join(dir, "rootfs")
		if err := o.rootfs(ctx, t, arch, rootfs); err != nil {
			return err
		}
		return run(ctx, t.Root, nil, t.Osbuilder, "image", "--rootfs", rootfs, "-o", tmp)
	})
}

// GuestTool cross-builds tests/cmd/guesttool (static, no cgo) for arch and
// returns its path; it is put into initrds and container rootfs.
func GuestTool(ctx context.Context, t *Tools, arch string) (string, error) {
	out := filepath.Join(t.Root, "bin", arch, "guesttool")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	env := []string{"CGO_ENABLED=0", "GOARCH=" + GoArch(arch)}
	if err := run(ctx, t.Root, env, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./tests/cmd/guesttool"); err != nil {
		return "", err
	}
	return out, nil
}

// BusyboxRootfs lays out a container rootfs in dir from Debian's static
// busybox (/bin/busybox from busybox-static), with its applets as symlinks,
// plus the given extra files.
func BusyboxRootfs(dir string, extras ...Extra) error {
	bb := "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		return fmt.Errorf("%s: %w (install busybox-static)", bb, err)
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "tmp", "root", "var"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(bb, filepath.Join(dir, "bin/busybox"), 0o755); err != nil {
		return err
	}
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, l := range strings.Fields(string(out)) {
		p := filepath.Join(dir, l)
		if l == "bin/busybox" {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.Symlink("/bin/busybox", p); err != nil && !os.IsExist(err) {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/group"), []byte("root:x:0:\n"), 0o644); err != nil {
		return err
	}
	for _, e := range extras {
		if err := copyFile(e.Src, filepath.Join(dir, e.Dst), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Ext4Image makes a raw ext4 filesystem (no partition table) of sizeMiB from
// the tree at src, without root or loop devices (mkfs.ext4 -d).
func Ext4Image(ctx context.Context, src, out string, sizeMiB int) error {
	os.Remove(out)
	return run(ctx, "", nil, "mkfs.ext4", "-q", "-F", "-L", "ctrroot", "-d", src, out, fmt.Sprintf("%dM", sizeMiB))
}
