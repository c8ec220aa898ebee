package rootfsbuilder

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The debug shell is built from source when a rootfs asks for it, for the
// target GOARCH, static (CGO_ENABLED=0). Inside this module's source tree it
// builds with the module's own go.sum; elsewhere it builds a one-file module
// pinned to the versions below (kept equal to go.mod by a test).
const (
	debugShellPkg = "./rootfs-builder/debugshell"
	modulePath    = "github.com/kguest/kguest"
	uRootVersion  = "v0.16.0"
	shVersion     = "v3.11.0"
)

//go:embed debugshell/main.go
var debugShellSource []byte

// DebugShellApplets are the commands linked to /bin/sh in the rootfs.
var DebugShellApplets = []string{
	"base64", "cat", "chmod", "cp", "find", "ls", "mkdir", "mktemp",
	"mv", "rm", "shasum", "tar", "touch", "xargs",
}

// InstallDebugShell builds the debug shell for arch and installs it in root
// as /bin/sh, with links for its applets.
func InstallDebugShell(ctx context.Context, root string, arch Arch, progress io.Writer) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		if _, serr := os.Stat("/usr/local/go/bin/go"); serr != nil {
			return fmt.Errorf("--debug-shell needs the Go toolchain (go) in PATH: %w", err)
		}
		gobin = "/usr/local/go/bin/go"
	}
	// go runs in another directory: the output path must be absolute.
	root, err = filepath.Abs(root)
	if err != nil {
		return err
	}
	out := filepath.Join(root, "bin", "sh")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	env, err := goEnv(ctx, gobin, arch)
	if err != nil {
		return err
	}

	args := []string{"build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out}
	dir := findModuleRoot()
	if dir != "" {
		// Never touch the source tree's go.mod.
		env = append(env, "GOFLAGS=-mod=readonly")
		args = append(args, debugShellPkg)
	} else {
		env = append(env, "GOFLAGS=-mod=mod")
		tmp, err := os.MkdirTemp("", "osbuilder-debugshell-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		gomod := fmt.Sprintf("module osbuilder/debugshell\n\ngo 1.24\n\nrequire (\n\tgithub.com/u-root/u-root %s\n\tmvdan.cc/sh/v3 %s\n)\n", uRootVersion, shVersion)
		if err := os.WriteFile(filepath.Join(tmp, "go.mod"), []byte(gomod), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, "main.go"), debugShellSource, 0o644); err != nil {
			return err
		}
		if err := runGo(ctx, gobin, tmp, env, progress, "mod", "tidy"); err != nil {
			return err
		}
		dir = tmp
		args = append(args, ".")
	}
	if err := runGo(ctx, gobin, dir, env, progress, args...); err != nil {
		return err
	}
	if err := CheckStaticELF(out, arch); err != nil {
		return err
	}
	for _, a := range DebugShellApplets {
		if err := os.Symlink("sh", filepath.Join(root, "bin", a)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	return nil
}

func runGo(ctx context.Context, gobin, dir string, env []string, progress io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if progress != nil {
		cmd.Stderr = io.MultiWriter(&stderr, progress)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s (in %s): %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// goEnv is the environment for building the shell: static, for the target
// arch, with a private build cache when the user has none (e.g. nobody).
func goEnv(ctx context.Context, gobin string, arch Arch) ([]string, error) {
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+string(arch), "GOWORK=off")
	out, err := exec.CommandContext(ctx, gobin, "env", "GOCACHE").Output()
	cache := strings.TrimSpace(string(out))
	if err != nil || cache == "" || !writable(cache) {
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("osbuilder-gocache-%d", os.Getuid()))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("go build cache: %w", err)
		}
		env = append(env, "GOCACHE="+dir)
	}
	return env, nil
}

func writable(dir string) bool {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false
	}
	f, err := os.CreateTemp(dir, ".w")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}

// findModuleRoot returns this module's source tree when osbuilder runs from
// inside it ($KGUEST_SRC, the working directory or the binary's directory).
func findModuleRoot() string {
	var starts []string
	if s := os.Getenv("KGUEST_SRC"); s != "" {
		starts = append(starts, s)
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, s := range starts {
		for d := s; ; d = filepath.Dir(d) {
			if isModuleRoot(d) {
				if _, err := os.Stat(filepath.Join(d, debugShellPkg, "main.go")); err == nil {
					return d
				}
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return ""
}

func isModuleRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(l, "module ")) == modulePath
		}
	}
	return false
}
