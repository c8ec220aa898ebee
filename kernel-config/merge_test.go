package kernelconfig

import (
	"strings"
	"testing"
)

func mustFragment(t *testing.T, name, text string) *Fragment {
	t.Helper()
	f, err := ParseFragment(name, strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestMergeTags(t *testing.T) {
	a := mustFragment(t, "a.conf", "CONFIG_A=y\n")
	b := mustFragment(t, "b.conf", "# arch: !s390x\nCONFIG_B=y\n")
	c := mustFragment(t, "c.conf", "# arch: s390x\nCONFIG_C=y\n")
	for _, tc := range []struct {
		arch string
		want string
	}{
		{"x86_64", "CONFIG_A=y\nCONFIG_B=y\n"},
		{"s390x", "CONFIG_A=y\nCONFIG_C=y\n"},
	} {
		r, err := Merge(tc.arch, []*Fragment{a, b, c})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Fragment(); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.arch, got, tc.want)
		}
	}
}

func TestMergeDuplicateAndConflict(t *testing.T) {
	a := mustFragment(t, "a.conf", "CONFIG_A=y\nCONFIG_B=y\n")
	b := mustFragment(t, "b.conf", "CONFIG_X=1\n# CONFIG_B is not set\n")
	c := mustFragment(t, "c.conf", "CONFIG_A=y\n")
	_, err := Merge("x86_64", []*Fragment{a, b, c})
	if err == nil {
		t.Fatal("merge accepted a duplicate and a conflict")
	}
	for _, want := range []string{
		"conflict: CONFIG_B: a.conf:2 (y) and b.conf:2 (n)",
		"duplicate: CONFIG_A: a.conf:1 (y) and c.conf:1 (y)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	// A duplicate in a fragment excluded for the architecture is not one.
	d := mustFragment(t, "d.conf", "# arch: arm64\nCONFIG_A=n\n")
	if _, err := Merge("x86_64", []*Fragment{a, d}); err != nil {
		t.Errorf("excluded fragment caused: %v", err)
	}
}
