package kernelconfig

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLockFileWaitsAndCancels(t *testing.T) {
	lockWaitLog = io.Discard
	defer func() { lockWaitLog = os.Stderr }()
	p := filepath.Join(t.TempDir(), "x.lock")
	unlock, err := lockFile(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held: got %v, want the context's error", err)
	}
	got := make(chan error, 1)
	go func() {
		u, err := lockFile(context.Background(), p)
		if err == nil {
			u()
		}
		got <- err
	}()
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("lock not taken after release")
	}
}

func TestOpenSourceDir(t *testing.T) {
	dir := t.TempDir()
	mk := "# SPDX\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 7\nEXTRAVERSION = -rc1\nNAME = x\n"
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := OpenSource(context.Background(), t.TempDir(), dir, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if src.Version != "6.1.7-rc1" || src.Dir != dir {
		t.Errorf("source %+v", src)
	}
	if _, err := OpenSource(context.Background(), t.TempDir(), t.TempDir(), io.Discard); err == nil {
		t.Error("a directory without a kernel Makefile was accepted")
	}
}

func TestOpenSourceTarball(t *testing.T) {
	tree := filepath.Join(t.TempDir(), "linux-source-6.1")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "Makefile"), []byte("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "linux.tar.gz")
	if out, err := exec.Command("tar", "-czf", tarball, "-C", filepath.Dir(tree), "linux-source-6.1").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	cache := t.TempDir()
	src, err := OpenSource(context.Background(), cache, tarball, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if src.Version != "6.1.9" || filepath.Base(src.Dir) != "linux-source-6.1" || !strings.HasPrefix(src.Dir, cache) {
		t.Fatalf("source %+v", src)
	}
	// The second open uses the unpacked tree: a file added there stays.
	marker := filepath.Join(src.Dir, "kept")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := OpenSource(context.Background(), cache, tarball, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if again.Dir != src.Dir || again.Stamp != src.Stamp {
		t.Errorf("second open: %+v, first %+v", again, src)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("tarball unpacked again: %v", err)
	}
}
