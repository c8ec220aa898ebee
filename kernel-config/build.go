package kernelconfig

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// BuildOptions say what to build and where to put it.
type BuildOptions struct {
	Options
	// OutDir receives the versioned images, the config and the stable
	// symlinks (vmlinux, bzImage or Image, config).
	OutDir string
	// Jobs is make's -j; 0 means the number of CPUs.
	Jobs int
	// Progress receives a line every ProgressEvery while make runs.
	Progress      io.Writer
	ProgressEvery time.Duration
}

// Kernel describes a built kernel in the cache or in an output dir.
type Kernel struct {
	Arch string `json:"arch"`
	// Release is the kernel's uname -r, e.g. 6.1.192-kguest.
	Release string `json:"release"`
	// ConfigVersion is the fragment set version.
	ConfigVersion int `json:"config_version"`
	// Name is Release plus "-c" and the config version; every artifact
	// file is named <image>-<Name>.
	Name string `json:"name"`
	// ConfigHash is the sha256 of the resolved .config.
	ConfigHash string `json:"config_hash"`
	// Files maps stable names (vmlinux, bzImage, Image, config) to the
	// versioned file names.
	Files map[string]string `json:"files"`
	// Enabled is the number of =y options.
	Enabled int `json:"enabled"`
	// BuildSeconds is how long make took.
	BuildSeconds float64 `json:"build_seconds"`
	// Dir is where the files are (cache or output dir); not stored.
	Dir string `json:"-"`
	// Cached is true when the build came from the cache.
	Cached bool `json:"-"`
}

// Path returns the path of the stable-named artifact (e.g. "vmlinux").
func (k *Kernel) Path(stable string) string {
	return filepath.Join(k.Dir, k.Files[stable])
}

// inputHash covers everything that decides the resulting kernel, so
// that an unchanged input is found without running Kconfig.
func inputHash(o *Options, req *Request) (string, error) {
	_, allow, err := BuiltinAllowlist(o.Source.Version)
	if err != nil {
		return "", err
	}
	cc := "native"
	if !o.Arch.Native() {
		cc = o.Arch.CrossCompile
	}
	return shortHash("kguest-kernel-v1", o.Source.Stamp, o.Source.Version, o.Arch.Name, cc,
		fmt.Sprint(ConfigVersion()), req.Fragment(), allow, compilerVersion(o.Arch)), nil
}

// compilerVersion is part of the cache key: a compiler upgrade rebuilds.
func compilerVersion(a *Arch) string {
	cc := "gcc"
	if !a.Native() {
		cc = a.CrossCompile + "gcc"
	}
	out, err := exec.Command(cc, "--version").Output()
	if err != nil {
		return cc + ": " + err.Error()
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return line
}

// Build returns the kernel for the options, building it when the cache
// does not have it, and installs it into OutDir.
//
// The cache has two levels: kernels/<arch>-<version>-c<config
// version>-<config hash> holds a build of one resolved .config, and
// kernels/by-input/<input hash> names the build that a set of inputs
// (source, fragments, allowlist, toolchain) resolved to. Unchanged
// inputs are served from the second without running Kconfig; changed
// fragments that resolve to the same .config reuse the build after a
// Kconfig run.
func Build(ctx context.Context, o *BuildOptions) (*Kernel, error) {
	req, err := o.Request()
	if err != nil {
		return nil, err
	}
	key, err := inputHash(&o.Options, req)
	if err != nil {
		return nil, err
	}
	kernels := filepath.Join(o.CacheDir, "kernels")
	index := filepath.Join(kernels, "by-input", key)
	if name, err := os.ReadFile(index); err == nil {
		if k, err := readKernel(filepath.Join(kernels, strings.TrimSpace(string(name)))); err == nil {
			return install(k, o.OutDir)
		}
	}
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "configuring Linux %s for %s (allnoconfig + fragments, olddefconfig, verify)\n", o.Source.Version, o.Arch.Name)
	}
	cfg, err := Generate(ctx, &o.Options)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%s-%s-c%d-%s", o.Arch.Name, o.Source.Version, cfg.Version, cfg.Hash()[:16])
	cdir := filepath.Join(kernels, name)
	if err := os.MkdirAll(filepath.Dir(index), 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFile(ctx, cdir+".lock")
	if err != nil {
		return nil, err
	}
	k, err := readKernel(cdir) // built by an earlier or concurrent run?
	if err != nil {
		k, err = build(ctx, o, cfg, cdir)
	}
	unlock()
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(index, []byte(name+"\n")); err != nil {
		return nil, err
	}
	return install(k, o.OutDir)
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readKernel(dir string) (*Kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kernel.json"))
	if err != nil {
		return nil, err
	}
	k := &Kernel{}
	if err := json.Unmarshal(b, k); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	k.Dir, k.Cached = dir, true
	return k, nil
}

func build(ctx context.Context, o *BuildOptions, cfg *Config, cdir string) (*Kernel, error) {
	bdir := o.buildDir("")
	if err := os.MkdirAll(bdir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFile(ctx, bdir+".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	// One build tree per source and architecture: a changed config
	// rebuilds only what it touches.
	if err := os.WriteFile(filepath.Join(bdir, ".config"), cfg.Data, 0o644); err != nil {
		return nil, err
	}
	if err := runMake(ctx, &o.Options, bdir, nil, "olddefconfig"); err != nil {
		return nil, err
	}
	if got, err := os.ReadFile(filepath.Join(bdir, ".config")); err != nil || string(got) != string(cfg.Data) {
		return nil, fmt.Errorf("build tree %s: olddefconfig changed the verified config (%v)", bdir, err)
	}
	if err := os.MkdirAll(filepath.Dir(cdir), 0o755); err != nil {
		return nil, err
	}
	tmp := cdir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(filepath.Dir(cdir), filepath.Base(cdir)+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	var targets []string
	for _, im := range o.Arch.Images {
		targets = append(targets, im.Target)
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	every := o.ProgressEvery
	if every == 0 {
		every = 30 * time.Second
	}
	fmt.Fprintf(progress, "building Linux %s for %s (config version %d, make -j%d %s); log: %s\n",
		o.Source.Version, o.Arch.Name, cfg.Version, jobs, strings.Join(targets, " "), logPath)
	start := time.Now()
	args := append([]string{"-C", o.Source.Dir, "O=" + bdir, fmt.Sprintf("-j%d", jobs)}, o.Arch.MakeVars()...)
	args = append(args, targets...)
	cmd := exec.CommandContext(ctx, "make", args...)
	cmd.Env = append(os.Environ(), buildEnv()...)
	lw := &lastLine{w: logf}
	cmd.Stdout, cmd.Stderr = lw, lw
	fmt.Fprintf(logf, "make %s\n", strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := waitProgress(cmd, every, func() {
		fmt.Fprintf(progress, "  %s: %s elapsed, %s\n", o.Arch.Name, time.Since(start).Round(time.Second), lw.last())
	}); err != nil {
		return nil, fmt.Errorf("build Linux %s for %s: %w (full log: %s)\n%s", o.Source.Version, o.Arch.Name, err, logPath, tailOf(logPath, 40))
	}
	elapsed := time.Since(start)
	rel, err := os.ReadFile(filepath.Join(bdir, "include/config/kernel.release"))
	if err != nil {
		return nil, err
	}
	y, _ := cfg.Values.Count()
	k := &Kernel{
		Arch: o.Arch.Name, Release: strings.TrimSpace(string(rel)), ConfigVersion: cfg.Version,
		ConfigHash: cfg.Hash(), Files: map[string]string{}, Enabled: y,
		BuildSeconds: elapsed.Seconds(), Dir: cdir,
	}
	k.Name = fmt.Sprintf("%s-c%d", k.Release, k.ConfigVersion)
	for _, im := range o.Arch.Images {
		name := im.Name + "-" + k.Name
		if err := copyFile(filepath.Join(bdir, im.Path), filepath.Join(tmp, name)); err != nil {
			return nil, err
		}
		k.Files[im.Name] = name
	}
	k.Files["config"] = "config-" + k.Name
	if err := os.WriteFile(filepath.Join(tmp, k.Files["config"]), cfg.Data, 0o444); err != nil {
		return nil, err
	}
	meta, _ := json.MarshalIndent(k, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, "kernel.json"), append(meta, '\n'), 0o644); err != nil {
		return nil, err
	}
	logf.Close()
	copyFile(logPath, filepath.Join(tmp, "build.log"))
	os.RemoveAll(cdir)
	if err := os.Rename(tmp, cdir); err != nil {
		return nil, err
	}
	os.Remove(logPath)
	fmt.Fprintf(progress, "built %s for %s in %s\n", k.Name, k.Arch, elapsed.Round(time.Second))
	return k, nil
}

// install copies the kernel's files into dir with versioned names and
// points the stable names at them.
func install(k *Kernel, dir string) (*Kernel, error) {
	if dir == "" {
		return k, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for stable, name := range k.Files {
		dst := filepath.Join(dir, name)
		if err := linkOrCopy(filepath.Join(k.Dir, name), dst); err != nil {
			return nil, err
		}
		link := filepath.Join(dir, stable)
		os.Remove(link)
		if err := os.Symlink(name, link); err != nil {
			return nil, err
		}
	}
	meta, _ := json.MarshalIndent(k, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "kernel-"+k.Name+".json"), append(meta, '\n'), 0o644); err != nil {
		return nil, err
	}
	out := *k
	out.Dir = dir
	return &out, nil
}

// linkOrCopy hard-links src to dst (read-only cache files are safe to
// share), or copies when they are on different filesystems.
func linkOrCopy(src, dst string) error {
	os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm()&0o555|0o444)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// waitProgress waits for cmd, calling tick every period meanwhile.
func waitProgress(cmd *exec.Cmd, period time.Duration, tick func()) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			tick()
		}
	}
}

// lastLine passes output through and remembers the last non-empty line.
type lastLine struct {
	w    io.Writer
	mu   sync.Mutex
	line string
	part []byte
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.part = append(l.part, p...)
	if i := strings.LastIndexByte(string(l.part), '\n'); i >= 0 {
		lines := strings.Split(strings.TrimSpace(string(l.part[:i])), "\n")
		if s := strings.TrimSpace(lines[len(lines)-1]); s != "" {
			l.line = s
		}
		l.part = append([]byte(nil), l.part[i+1:]...)
	}
	l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lastLine) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.line
}

func tailOf(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
