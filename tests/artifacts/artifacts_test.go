package artifacts

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestKey(t *testing.T) {
	dir := t.TempDir()
	w := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tools := &Tools{Agent: w("agent", "a1"), Osbuilder: w("osb", "o1")}
	x, y := w("x", "x1"), w("y", "y1")
	o := RootfsOptions{Extras: []Extra{{x, "/x"}, {y, "/y"}}}
	k1, err := o.key(tools, "initrd", "gzip")
	if err != nil {
		t.Fatal(err)
	}
	same, _ := RootfsOptions{Extras: []Extra{{y, "/y"}, {x, "/x"}}}.key(tools, "initrd", "gzip")
	if same != k1 {
		t.Errorf("extras order changed the key")
	}
	for name, change := range map[string]func() (string, error){
		"kind":        func() (string, error) { return o.key(tools, "image") },
		"compression": func() (string, error) { return o.key(tools, "initrd", "zstd") },
		"debug shell": func() (string, error) {
			return RootfsOptions{Extras: o.Extras, DebugShell: true}.key(tools, "initrd", "gzip")
		},
		"extra dst": func() (string, error) {
			return RootfsOptions{Extras: []Extra{{x, "/z"}, {y, "/y"}}}.key(tools, "initrd", "gzip")
		},
		"agent bytes": func() (string, error) {
			w("agent", "a2")
			defer w("agent", "a1")
			return o.key(tools, "initrd", "gzip")
		},
		"extra bytes": func() (string, error) { w("x", "x2"); defer w("x", "x1"); return o.key(tools, "initrd", "gzip") },
	} {
		k, err := change()
		if err != nil {
			t.Fatal(err)
		}
		if k == k1 {
			t.Errorf("changing the %s kept the key", name)
		}
	}
	if _, err := (RootfsOptions{Extras: []Extra{{filepath.Join(dir, "missing"), "/m"}}}).key(tools, "initrd"); err == nil {
		t.Error("missing extra: no error")
	}
}

func TestCached(t *testing.T) {
	out := filepath.Join(t.TempDir(), "sub", "img")
	calls := 0
	build := func(tmp string) error { calls++; return os.WriteFile(tmp, []byte("data"), 0o644) }
	img, err := cached(out, build)
	if err != nil || img.Cached || img.Size != 4 || calls != 1 {
		t.Fatalf("first build: %+v %v calls=%d", img, err, calls)
	}
	img, err = cached(out, build)
	if err != nil || !img.Cached || calls != 1 {
		t.Fatalf("second build: %+v %v calls=%d", img, err, calls)
	}
	failed := filepath.Join(t.TempDir(), "img")
	if _, err := cached(failed, func(tmp string) error { os.WriteFile(tmp, []byte("half"), 0o644); return errors.New("boom") }); err == nil {
		t.Fatal("failed build: no error")
	}
	if _, err := os.Stat(failed); !os.IsNotExist(err) {
		t.Error("failed build left the output")
	}
	if _, err := os.Stat(failed + ".tmp"); !os.IsNotExist(err) {
		t.Error("failed build left its temp file")
	}
}

func TestBusyboxRootfs(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs busybox-static (/bin/busybox)")
	}
	dir := t.TempDir()
	if err := BusyboxRootfs(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bin/sh", "bin/cat", "bin/busybox", "etc/passwd"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
