package container

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// maxSymlinks bounds symlink resolution, as the kernel does (ELOOP).
const maxSymlinks = 40

// Validate checks a spec before it reaches libcontainer: the rootfs must be
// an existing absolute directory, the process must be runnable, and the cwd
// and every mount destination must stay inside the rootfs, following the
// rootfs's own symlinks.
func Validate(spec *specs.Spec) error {
	if spec == nil {
		return invalidf("missing spec")
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return invalidf("missing root path")
	}
	root := spec.Root.Path
	if !filepath.IsAbs(root) {
		return invalidf("root path %q is not absolute", root)
	}
	st, err := os.Stat(root)
	if err != nil {
		return invalidf("rootfs %q: %v", root, err)
	}
	if !st.IsDir() {
		return invalidf("rootfs %q is not a directory", root)
	}
	if err := ValidateProcess(root, spec.Process); err != nil {
		return err
	}
	for _, m := range spec.Mounts {
		if m.Destination == "" {
			return invalidf("mount of %q has no destination", m.Source)
		}
		if !filepath.IsAbs(m.Destination) {
			return invalidf("mount destination %q is not absolute", m.Destination)
		}
		if err := confined(root, m.Destination); err != nil {
			return invalidf("mount destination %q: %v", m.Destination, err)
		}
	}
	if spec.Linux == nil {
		return invalidf("missing linux section")
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Path == "" {
			continue
		}
		if _, err := os.Stat(ns.Path); err != nil {
			return invalidf("%s namespace path: %v", ns.Type, err)
		}
	}
	return nil
}

// ValidateProcess checks a process of a container whose rootfs is root.
func ValidateProcess(root string, p *specs.Process) error {
	if p == nil {
		return invalidf("missing process")
	}
	if len(p.Args) == 0 || p.Args[0] == "" {
		return invalidf("process has no args")
	}
	if p.Cwd == "" {
		return invalidf("process has no cwd")
	}
	if !filepath.IsAbs(p.Cwd) {
		return invalidf("cwd %q is not absolute", p.Cwd)
	}
	if err := confined(root, p.Cwd); err != nil {
		return invalidf("cwd %q: %v", p.Cwd, err)
	}
	for _, e := range p.Env {
		if !strings.Contains(e, "=") {
			return invalidf("env entry %q is not KEY=VALUE", e)
		}
	}
	return nil
}

var errEscape = errors.New("escapes the container rootfs")

// confined resolves path inside root component by component, following
// symlinks as the container would see them, and fails when a ".." (literal
// or from a symlink target) would climb above root. Components that do not
// exist yet are checked lexically.
func confined(root, path string) error {
	var (
		stack    []string // resolved components below root
		pending  = split(path)
		links    int
		resolved = true // whether stack still names existing entries
	)
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return errEscape
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, c)
		if !resolved {
			continue
		}
		full := filepath.Join(append([]string{root}, stack...)...)
		fi, err := os.Lstat(full)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, os.ErrInvalid) {
				resolved = false
				continue
			}
			// ENOTDIR and the like: libcontainer will fail cleanly.
			resolved = false
			continue
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		links++
		if links > maxSymlinks {
			return errors.New("too many levels of symbolic links")
		}
		target, err := os.Readlink(full)
		if err != nil {
			return err
		}
		stack = stack[:len(stack)-1]
		if filepath.IsAbs(target) {
			// Absolute targets are relative to the container root.
			stack = stack[:0]
		}
		pending = append(split(target), pending...)
	}
	return nil
}

func split(p string) []string {
	return strings.Split(p, "/")
}
