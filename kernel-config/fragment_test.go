package kernelconfig

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseFragment(t *testing.T) {
	in := `# arch: !s390x
# A comment.

CONFIG_A=y
CONFIG_B=m
# CONFIG_C is not set
CONFIG_D="hello world"
CONFIG_E=100
CONFIG_F=0x1000
CONFIG_G=-1
`
	f, err := ParseFragment("t.conf", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{"A", "y", "t.conf:4"}, {"B", "m", "t.conf:5"}, {"C", "n", "t.conf:6"},
		{"D", `"hello world"`, "t.conf:7"}, {"E", "100", "t.conf:8"}, {"F", "0x1000", "t.conf:9"},
		{"G", "-1", "t.conf:10"},
	}
	if !reflect.DeepEqual(f.Entries, want) {
		t.Errorf("entries:\n got %v\nwant %v", f.Entries, want)
	}
	if !reflect.DeepEqual(f.Arches, ArchTag{Exclude: []string{"s390x"}}) {
		t.Errorf("tag: %+v", f.Arches)
	}
	if got := f.Entries[2].String(); got != "# CONFIG_C is not set" {
		t.Errorf("String of unset entry: %q", got)
	}
}

func TestParseFragmentErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"garbage", "CONFIG_A=y\nhello\n", "t.conf:2: not a config line"},
		{"bad value", "CONFIG_A=yes\n", "t.conf:1: CONFIG_A: bad value"},
		{"unquoted string", "CONFIG_A=foo bar\n", "bad value"},
		{"twice", "CONFIG_A=y\n# CONFIG_A is not set\n", "t.conf:2: CONFIG_A already set on line 1"},
		{"late tag", "CONFIG_A=y\n# arch: x86_64\n", "arch tag must come before the first entry"},
		{"unknown arch", "# arch: riscv64\n", `unknown architecture "riscv64"`},
		{"mixed tag", "# arch: x86_64 !s390x\n", "mixes a list and exclusions"},
		{"two tags", "# arch: x86_64\n# arch: arm64\n", "second arch tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFragment("t.conf", strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestArchTagMatches(t *testing.T) {
	for _, tc := range []struct {
		tag  string
		arch string
		want bool
	}{
		{"!s390x", "s390x", false},
		{"!s390x", "x86_64", true},
		{"!s390x, !arm64", "arm64", false},
		{"x86_64 arm64", "arm64", true},
		{"x86_64 arm64", "s390x", false},
		{"x86_64", "x86_64", true},
	} {
		tag, err := parseArchTag(tc.tag)
		if err != nil {
			t.Fatal(err)
		}
		if got := tag.Matches(tc.arch); got != tc.want {
			t.Errorf("tag %q on %s: got %v, want %v", tc.tag, tc.arch, got, tc.want)
		}
	}
	if !(ArchTag{}).Matches("s390x") {
		t.Error("an untagged fragment must apply to every architecture")
	}
}

// TestBuiltinFragments parses the shipped fragments and merges them for
// every architecture: a duplicate or conflict across files fails here
// before any kernel tree is involved.
func TestBuiltinFragments(t *testing.T) {
	if v := ConfigVersion(); v < 1 {
		t.Fatalf("config version %d", v)
	}
	for _, arch := range ArchNames() {
		frags, err := Fragments(arch)
		if err != nil {
			t.Fatal(err)
		}
		req, err := Merge(arch, frags)
		if err != nil {
			t.Fatal(err)
		}
		for _, sym := range []string{"VIRTIO_VSOCKETS", "VIRTIO_CONSOLE", "OVERLAY_FS", "CGROUPS", "SECCOMP"} {
			if e, ok := req.Lookup(sym); !ok || e.Value != "y" {
				t.Errorf("%s: CONFIG_%s not requested as y (%v)", arch, sym, e)
			}
		}
		_, dax := req.Lookup("FS_DAX")
		if want := arch != "s390x"; dax != want {
			t.Errorf("%s: FS_DAX requested=%v, want %v", arch, dax, want)
		}
	}
}
