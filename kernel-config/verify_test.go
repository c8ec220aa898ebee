package kernelconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTree writes a tiny kernel Kconfig tree.
func fakeTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"Kconfig": `mainmenu "fake"
source "arch/$(SRCARCH)/Kconfig"
source "fs/Kconfig"
source "drivers/Kconfig"
`,
		"arch/x86/Kconfig": `config X86
	def_bool y
	select ARCH_SUPPORTS_ACPI
`,
		"arch/s390/Kconfig": `config S390
	def_bool y
`,
		"fs/Kconfig": `menuconfig MISC_FILESYSTEMS
	bool "Misc filesystems"

if MISC_FILESYSTEMS
source "fs/erofs/Kconfig"
endif
`,
		"fs/erofs/Kconfig": `config EROFS_FS
	tristate "EROFS"
	depends on BLOCK
	help
	  This text mentions
	  source "no/such/file"
	  and config FAKE_SYMBOL, which are not statements.

config EROFS_FS_XATTR
	bool "xattr"
	depends on EROFS_FS
`,
		"drivers/Kconfig": `menu "Drivers"
	depends on !S390

config ARCH_SUPPORTS_ACPI
	bool

config ACPI
	bool "ACPI"
	depends on ARCH_SUPPORTS_ACPI

endmenu

config MODES
	int "Modes"
	default 3
`,
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestIndexKconfig(t *testing.T) {
	idx, err := IndexKconfig(fakeTree(t), "x86")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := idx["S390"]; ok {
		t.Error("indexed another architecture's Kconfig")
	}
	if _, ok := idx["FAKE_SYMBOL"]; ok {
		t.Error("help text parsed as a config entry")
	}
	got := idx["EROFS_FS"]
	if len(got) != 1 || strings.Join(got[0].Depends, ";") != "MISC_FILESYSTEMS;BLOCK" {
		t.Errorf("EROFS_FS entries: %+v (want the if around the source line, then its own depends)", got)
	}
	if d := idx["ACPI"]; len(d) != 1 || strings.Join(d[0].Depends, ";") != "!S390;ARCH_SUPPORTS_ACPI" {
		t.Errorf("ACPI entries: %+v (want the menu's depends, then its own)", d)
	}
	if d := idx["MODES"]; len(d) != 1 || len(d[0].Depends) != 0 {
		t.Errorf("MODES after endmenu: %+v", d)
	}
}

func TestEvalExpr(t *testing.T) {
	cfg := DotConfig{"A": "y", "B": "m", "C": "n", "S": `"foo"`, "I": "3"}
	for _, tc := range []struct{ expr, want string }{
		{"A", "y"},
		{"B", "m"},
		{"C", "n"},
		{"UNKNOWN", "n"},
		{"A && B", "m"},
		{"A && C", "n"},
		{"C || B", "m"},
		{"!C", "y"},
		{"!B", "m"},
		{"!(A && C)", "y"},
		{"A && (C || !B)", "m"},
		{`S = "foo"`, "y"},
		{"S != foo", "n"},
		{"I = 3", "y"},
		{"B = m", "y"},
		{"A = n", "n"},
		{"$(cc-option,-foo)", "y"}, // unknown syntax: never claimed unmet
		{"I >= 4", "y"},
	} {
		if got := evalExpr(tc.expr, cfg); got != tc.want {
			t.Errorf("%q: got %s, want %s", tc.expr, got, tc.want)
		}
	}
}

// TestVerifyImpossible asks for an option the (fake) kernel cannot give
// and checks that the error names the symbol, both values, the fragment
// and the unmet dependency.
func TestVerifyImpossible(t *testing.T) {
	tree := fakeTree(t)
	frag := mustFragment(t, "impossible.conf", "CONFIG_EROFS_FS=y\nCONFIG_MODES=4\nCONFIG_ACPI=y\n# CONFIG_BLOCK is not set\n")
	req, err := Merge("x86_64", []*Fragment{frag})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseDotConfig(strings.NewReader(`CONFIG_X86=y
CONFIG_BLOCK=y
# CONFIG_MISC_FILESYSTEMS is not set
CONFIG_MODES=3
CONFIG_ARCH_SUPPORTS_ACPI=y
CONFIG_ACPI=y
`))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := IndexKconfig(tree, "x86")
	if err != nil {
		t.Fatal(err)
	}
	err = Verify(req, cfg, idx, nil)
	var verr *VerifyError
	if !errors.As(err, &verr) {
		t.Fatalf("got %v, want a VerifyError", err)
	}
	if len(verr.Mismatches) != 3 {
		t.Errorf("want 3 mismatches (BLOCK, EROFS_FS, MODES), got %v", verr)
	}
	for _, want := range []string{
		"CONFIG_EROFS_FS: asked for y, got n (from impossible.conf:1); unmet dependency: MISC_FILESYSTEMS (MISC_FILESYSTEMS=n) [fs/erofs/Kconfig:1]",
		"CONFIG_MODES: asked for 4, got 3 (from impossible.conf:2)",
		"CONFIG_BLOCK: asked for n, got y (from impossible.conf:4); the kernel's Kconfig does not define it",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "CONFIG_ACPI") {
		t.Errorf("ACPI was met but reported: %v", err)
	}

	// The same request on s390: ACPI is undefined there.
	idx390, err := IndexKconfig(tree, "s390")
	if err != nil {
		t.Fatal(err)
	}
	req390, _ := Merge("s390x", []*Fragment{mustFragment(t, "acpi.conf", "CONFIG_ACPI=y\n")})
	err = Verify(req390, DotConfig{"S390": "y"}, idx390, nil)
	if err == nil || !strings.Contains(err.Error(), "CONFIG_ACPI: asked for y, got n (from acpi.conf:1); unmet dependency: !S390 (S390=y)") {
		t.Errorf("s390 ACPI: %v", err)
	}
}

func TestVerifyValues(t *testing.T) {
	req, _ := Merge("x86_64", []*Fragment{mustFragment(t, "v.conf",
		"CONFIG_A=y\n# CONFIG_B is not set\n# CONFIG_C is not set\nCONFIG_S=\"x\"\nCONFIG_H=0x1f\n")})
	// B absent and C "is not set" both satisfy "not set"; hex case is
	// normalised by Kconfig.
	cfg := DotConfig{"A": "y", "C": "n", "S": `"x"`, "H": "0x1F"}
	if err := Verify(req, cfg, nil, nil); err != nil {
		t.Fatal(err)
	}
	cfg["A"] = "m"
	if err := Verify(req, cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "CONFIG_A: asked for y, got m") {
		t.Errorf("y vs m: %v", err)
	}
}

func TestAllowlist(t *testing.T) {
	a, err := ParseAllowlist("6.1", strings.NewReader(`# excused
CONFIG_FOO   # no such driver in 6.1
CONFIG_BAR s390x arm64
`))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := Merge("x86_64", []*Fragment{mustFragment(t, "a.conf", "CONFIG_FOO=y\nCONFIG_FOO_BAR=y\nCONFIG_BAR=y\n")})
	err = Verify(req, DotConfig{}, nil, a)
	if err == nil {
		t.Fatal("allowlist excused too much")
	}
	msg := err.Error()
	if strings.Contains(msg, "CONFIG_FOO:") {
		t.Errorf("CONFIG_FOO is allowlisted: %s", msg)
	}
	// Exact names: FOO does not excuse FOO_BAR; BAR is excused on other
	// architectures only.
	if !strings.Contains(msg, "CONFIG_FOO_BAR:") || !strings.Contains(msg, "CONFIG_BAR:") {
		t.Errorf("want FOO_BAR and BAR reported on x86_64: %s", msg)
	}
	if !a.Allows("s390x", "BAR") || a.Allows("x86_64", "BAR") {
		t.Error("per-architecture allowlist entry")
	}
	for _, bad := range []string{"FOO\n", "CONFIG_FOO riscv\n", "CONFIG_FOO-BAR\n"} {
		if _, err := ParseAllowlist("bad", strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
