package kernelconfig

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
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
