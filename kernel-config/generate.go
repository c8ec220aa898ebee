package kernelconfig

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Options say what to configure.
type Options struct {
	Arch   *Arch
	Source *Source
	// CacheDir holds the per-architecture build trees (O= directories).
	CacheDir string
	// Extra fragments are merged after the built-in ones.
	Extra []*Fragment
	// Log receives make's output; nil discards it.
	Log io.Writer
}

// Config is a generated and verified kernel config.
type Config struct {
	Arch    *Arch
	Request *Request
	// Data is the resolved .config.
	Data []byte
	// Values is Data parsed.
	Values DotConfig
	// Version is the config (fragment set) version.
	Version int
}

// Hash identifies the resolved config.
func (c *Config) Hash() string {
	s := sha256.Sum256(c.Data)
	return hex.EncodeToString(s[:])
}

// Request merges the built-in fragments for the architecture with the
// extra ones.
func (o *Options) Request() (*Request, error) {
	frags, err := Fragments(o.Arch.Name)
	if err != nil {
		return nil, err
	}
	return Merge(o.Arch.Name, append(frags, o.Extra...))
}

// buildDir is the O= directory for one source and architecture; suffix
// separates config generation from builds.
func (o *Options) buildDir(suffix string) string {
	return filepath.Join(o.CacheDir, "build", o.Source.Stamp, o.Arch.Name+suffix)
}

// Generate resolves the fragments with the kernel's Kconfig, starting
// from allnoconfig, and verifies the result.
func Generate(ctx context.Context, o *Options) (*Config, error) {
	req, err := o.Request()
	if err != nil {
		return nil, err
	}
	dir := o.buildDir("-config")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	return resolve(ctx, o, req, dir)
}

func resolve(ctx context.Context, o *Options, req *Request, dir string) (*Config, error) {
	frag := filepath.Join(dir, "kguest.fragment")
	if err := os.WriteFile(frag, []byte(req.Fragment()), 0o644); err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(dir, ".config"))
	// allnoconfig with KCONFIG_ALLCONFIG applies the fragment while
	// everything else is switched off, so options newly made visible by
	// the fragment default to n rather than to their Kconfig default.
	if err := runMake(ctx, o, dir, o.Log, "KCONFIG_ALLCONFIG="+frag, "allnoconfig"); err != nil {
		return nil, err
	}
	if err := runMake(ctx, o, dir, o.Log, "olddefconfig"); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, ".config"))
	if err != nil {
		return nil, err
	}
	vals, err := ParseDotConfig(strings.NewReader(string(data)))
	if err != nil {
		return nil, err
	}
	allow, _, err := BuiltinAllowlist(o.Source.Version)
	if err != nil {
		return nil, err
	}
	if err := Verify(req, vals, nil, allow); err != nil {
		// Only index the Kconfig files (a second or so) when there is
		// something to explain.
		idx, ierr := IndexKconfig(o.Source.Dir, o.Arch.SrcArch)
		if ierr != nil {
			return nil, errors.Join(err, ierr)
		}
		return nil, Verify(req, vals, idx, allow)
	}
	return &Config{Arch: o.Arch, Request: req, Data: data, Values: vals, Version: ConfigVersion()}, nil
}

// runMake runs make in the source tree with O=dir.
func runMake(ctx context.Context, o *Options, dir string, log io.Writer, args ...string) error {
	argv := append([]string{"-C", o.Source.Dir, "O=" + dir}, o.Arch.MakeVars()...)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, "make", argv...)
	cmd.Env = append(os.Environ(), buildEnv()...)
	var tail tailBuffer
	w := io.Writer(&tail)
	if log != nil {
		w = io.MultiWriter(log, &tail)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("make %s: %w\n%s", strings.Join(argv, " "), err, tail.String())
	}
	return nil
}

// buildEnv makes builds reproducible and independent of the caller's
// locale.
func buildEnv() []string {
	return []string{
		"LC_ALL=C",
		"KBUILD_BUILD_USER=kguest",
		"KBUILD_BUILD_HOST=kguest",
		"KBUILD_BUILD_TIMESTAMP=1970-01-01",
		"KCONFIG_NOTIMESTAMP=1",
	}
}

// tailBuffer keeps the last few KiB written to it.
type tailBuffer struct{ b []byte }

const tailMax = 8 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > tailMax {
		t.b = append([]byte(nil), t.b[len(t.b)-tailMax:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
