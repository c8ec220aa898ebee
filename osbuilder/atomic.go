package osbuilder

import (
	"fmt"
	"os"
	"path/filepath"
)

// atomicFile is an output written to a temporary file in the destination's
// directory and renamed over it only when complete, so that a failed or
// interrupted build never leaves a half-written output.
type atomicFile struct {
	*os.File
	dst  string
	done bool
}

func createAtomic(dst string) (*atomicFile, error) {
	dir, base := filepath.Split(dst)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", dst, err)
	}
	return &atomicFile{File: f, dst: dst}, nil
}

// Commit syncs the file, gives it mode 0644 and renames it into place.
func (a *atomicFile) Commit() error {
	if err := a.File.Chmod(0o644); err != nil {
		return err
	}
	if err := a.File.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", a.dst, err)
	}
	if err := a.File.Close(); err != nil {
		return fmt.Errorf("write %s: %w", a.dst, err)
	}
	if err := os.Rename(a.File.Name(), a.dst); err != nil {
		return fmt.Errorf("write %s: %w", a.dst, err)
	}
	a.done = true
	return nil
}

// Abort removes the temporary file unless Commit succeeded; safe to defer.
func (a *atomicFile) Abort() {
	if !a.done {
		a.File.Close()
		os.Remove(a.File.Name())
	}
}
