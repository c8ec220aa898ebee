package kernelconfig

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DefaultCacheDir is where unpacked sources, build trees and built
// kernels live unless $KGUEST_CACHE says otherwise.
const DefaultCacheDir = "/var/cache/kguest"

// CacheDir returns $KGUEST_CACHE or the default.
func CacheDir() string {
	if d := os.Getenv("KGUEST_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// Source is an unpacked kernel source tree.
type Source struct {
	// Dir is the top of the tree (where the Makefile is).
	Dir string
	// Version is the kernel version from the Makefile, e.g. 6.1.192.
	Version string
	// Stamp identifies the source for cache keys.
	Stamp string
}

// OpenSource returns the kernel tree for src: a directory is used as is;
// a tarball is unpacked once into cacheDir/src/<stamp>. The stamp of a
// tarball is derived from its path, size and modification time, so a
// rebuilt tarball is unpacked again without hashing 130 MB on every run.
func OpenSource(ctx context.Context, cacheDir, src string, log io.Writer) (*Source, error) {
	abs, err := filepath.Abs(src)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("kernel source: %w", err)
	}
	var dir, stamp string
	if st.IsDir() {
		dir = abs
		stamp = shortHash("dir", abs)
	} else {
		stamp = shortHash("tar", abs, fmt.Sprint(st.Size()), fmt.Sprint(st.ModTime().UnixNano()))
		dir, err = unpack(ctx, filepath.Join(cacheDir, "src", stamp), abs, log)
		if err != nil {
			return nil, err
		}
	}
	v, err := makefileVersion(filepath.Join(dir, "Makefile"))
	if err != nil {
		return nil, err
	}
	return &Source{Dir: dir, Version: v, Stamp: stamp}, nil
}

func shortHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// unpack extracts tarball into dest once; dest/.unpacked names the top
// directory and marks completion.
func unpack(ctx context.Context, dest, tarball string, log io.Writer) (string, error) {
	marker := filepath.Join(dest, ".unpacked")
	if b, err := os.ReadFile(marker); err == nil {
		return filepath.Join(dest, strings.TrimSpace(string(b))), nil
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, dest+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if b, err := os.ReadFile(marker); err == nil { // unpacked while we waited
		return filepath.Join(dest, strings.TrimSpace(string(b))), nil
	}
	fmt.Fprintf(log, "unpacking %s into %s\n", tarball, dest)
	tmp := dest + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "tar", "-xf", tarball, "-C", tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("unpack %s: %v: %s", tarball, err, out)
	}
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return "", err
	}
	top := ""
	for _, e := range ents {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(tmp, e.Name(), "Makefile")); err == nil {
				top = e.Name()
			}
		}
	}
	if top == "" {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("unpack %s: no kernel tree (directory with a Makefile) inside", tarball)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".unpacked"), []byte(top+"\n"), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(dest)
	if err := os.Rename(tmp, dest); err != nil {
		return "", err
	}
	return filepath.Join(dest, top), nil
}

func makefileVersion(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("kernel source: %w", err)
	}
	defer f.Close()
	vals := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 0; sc.Scan() && n < 20; n++ {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			vals[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if vals["VERSION"] == "" || vals["PATCHLEVEL"] == "" {
		return "", fmt.Errorf("%s: no VERSION/PATCHLEVEL: not a kernel Makefile", path)
	}
	v := vals["VERSION"] + "." + vals["PATCHLEVEL"]
	if s := vals["SUBLEVEL"]; s != "" {
		v += "." + s
	}
	return v + vals["EXTRAVERSION"], nil
}

// lockWaitLog, when set, is told when a lock is held by another process.
var lockWaitLog io.Writer = os.Stderr

// lockFile takes an exclusive flock on path and returns the unlock func.
// While another process holds the lock it polls, so that ctx (e.g. an
// interrupt) can end the wait.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	unlock := func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
	for told := false; ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return unlock, nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !told && lockWaitLog != nil {
			fmt.Fprintf(lockWaitLog, "waiting for %s (another osbuilder is using it)\n", strings.TrimSuffix(path, ".lock"))
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
