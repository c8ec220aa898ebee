package kernelconfig

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestBuildFromCache checks that a kernel in the cache for the same
// inputs is installed without building, with versioned files and
// stable symlinks, and that any change of input misses the cache.
func TestBuildFromCache(t *testing.T) {
	cache, out := t.TempDir(), t.TempDir()
	arch, _ := LookupArch("x86_64")
	o := Options{Arch: arch, Source: &Source{Dir: "/nonexistent", Version: "6.1.0", Stamp: "test"}, CacheDir: cache}
	req, err := o.Request()
	if err != nil {
		t.Fatal(err)
	}
	key, err := inputHash(&o, req)
	if err != nil {
		t.Fatal(err)
	}
	name := "6.1.0-kguest-c1"
	k := Kernel{Arch: "x86_64", Release: "6.1.0-kguest", ConfigVersion: 1, Name: name,
		Files: map[string]string{"bzImage": "bzImage-" + name, "vmlinux": "vmlinux-" + name, "config": "config-" + name}}
	cdir := filepath.Join(cache, "kernels", "x86_64-6.1.0-c1-0123456789abcdef")
	for _, d := range []string{cdir, filepath.Join(cache, "kernels", "by-input")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(cache, "kernels", "by-input", key), []byte(filepath.Base(cdir)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range k.Files {
		if err := os.WriteFile(filepath.Join(cdir, f), []byte(f), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	meta, _ := json.Marshal(k)
	if err := os.WriteFile(filepath.Join(cdir, "kernel.json"), meta, 0o644); err != nil {
		t.Fatal(err)
	}

	got, err := Build(context.Background(), &BuildOptions{Options: o, OutDir: out})
	if err != nil {
		t.Fatalf("cache hit tried to build: %v", err)
	}
	if !got.Cached || got.Name != name || got.Dir != out {
		t.Errorf("kernel %+v", got)
	}
	for stable, f := range k.Files {
		target, err := os.Readlink(filepath.Join(out, stable))
		if err != nil || target != f {
			t.Errorf("%s -> %q (%v), want %s", stable, target, err, f)
		}
		b, err := os.ReadFile(filepath.Join(out, stable))
		if err != nil || string(b) != f {
			t.Errorf("%s content %q (%v)", stable, b, err)
		}
	}

	// Another fragment is another kernel: the lookup misses and Build
	// goes on to configure, which fails here for want of a source tree.
	o.Extra = []*Fragment{mustFragment(t, "x.conf", "CONFIG_IKCONFIG=y\n")}
	if key2, _ := inputHash(&o, mustMerge(t, &o)); key2 == key {
		t.Fatal("extra fragment did not change the cache key")
	}
	if _, err := Build(context.Background(), &BuildOptions{Options: o, OutDir: t.TempDir()}); err == nil {
		t.Fatal("changed config was served from the cache")
	}
}

func mustMerge(t *testing.T, o *Options) *Request {
	t.Helper()
	r, err := o.Request()
	if err != nil {
		t.Fatal(err)
	}
	return r
}
