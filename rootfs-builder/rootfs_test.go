package rootfsbuilder

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"testing"
)

// testAgent is a static executable for the host: the project's agent when
// built, else busybox-static.
func testAgent(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"../bin/kata-agent", "/bin/busybox"} {
		if err := CheckStaticELF(p, Arch(runtime.GOARCH)); err == nil {
			abs, _ := filepath.Abs(p)
			return abs
		}
	}
	t.Skip("needs a static executable: make agent, or apt-get install busybox-static")
	return ""
}

func TestBuildAgentInit(t *testing.T) {
	agent := testAgent(t)
	out := filepath.Join(t.TempDir(), "rootfs")
	extraDir := t.TempDir()
	os.MkdirAll(filepath.Join(extraDir, "sub"), 0o755)
	os.WriteFile(filepath.Join(extraDir, "sub/f"), []byte("x"), 0o600)
	os.Link(filepath.Join(extraDir, "sub/f"), filepath.Join(extraDir, "sub/g"))
	os.Symlink("sub/f", filepath.Join(extraDir, "l"))
	extraFile := filepath.Join(t.TempDir(), "policy.rego")
	os.WriteFile(extraFile, []byte("package agent_policy\n"), 0o644)
	mods := filepath.Join(t.TempDir(), "6.1.0-test")
	os.MkdirAll(filepath.Join(mods, "kernel"), 0o755)
	os.WriteFile(filepath.Join(mods, "modules.dep"), nil, 0o644)

	err := Build(context.Background(), Options{
		Agent: agent, Out: out, AgentInit: true,
		Extras: []Extra{{Src: extraDir, Dst: "/opt/extra"}, {Src: extraFile, Dst: "etc/kata-opa/default-policy.rego"},
			{Src: extraFile, Dst: "/etc/resolv.conf"}},
		Modules:         mods,
		SourceDateEpoch: 1234567890,
		BuilderVersion:  "1.2.3",
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{
		"proc": os.ModeDir | 0o555, "sys": os.ModeDir | 0o555, "dev": os.ModeDir | 0o755,
		"run": os.ModeDir | 0o755, "tmp": os.ModeDir | os.ModeSticky | 0o777, "var/tmp": os.ModeDir | os.ModeSticky | 0o777,
		"etc": os.ModeDir | 0o755, "sbin/init": 0o755, "etc/resolv.conf": 0o644,
		"opt/extra/sub/f": 0o600, "etc/kata-opa/default-policy.rego": 0o644,
		"lib/modules/6.1.0-test/modules.dep": 0o644,
	} {
		fi, err := os.Lstat(filepath.Join(out, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %s, want %s", p, fi.Mode(), want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(out, "etc/resolv.conf")); string(b) != "package agent_policy\n" {
		t.Errorf("an extra did not replace etc/resolv.conf: %q", b)
	}
	if l, err := os.Readlink(filepath.Join(out, "init")); err != nil || l != "/sbin/init" {
		t.Errorf("init -> %q, %v", l, err)
	}
	if l, err := os.Readlink(filepath.Join(out, "opt/extra/l")); err != nil || l != "sub/f" {
		t.Errorf("extra symlink -> %q, %v", l, err)
	}
	f1, _ := os.Stat(filepath.Join(out, "opt/extra/sub/f"))
	f2, _ := os.Stat(filepath.Join(out, "opt/extra/sub/g"))
	if !os.SameFile(f1, f2) {
		t.Error("extra hard link not kept")
	}
	devs, err := ReadDevices(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0] != DefaultDevices[0] || devs[1] != DefaultDevices[1] {
		t.Errorf("devices %+v", devs)
	}
	if _, err := os.Lstat(filepath.Join(out, "dev/console")); !os.IsNotExist(err) {
		t.Error("dev/console exists in the tree; it belongs in the manifest")
	}
	b, err := os.ReadFile(filepath.Join(out, ProvenanceFile))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseProvenance(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.BuilderVersion != "1.2.3" || !p.AgentInit || p.SourceDateEpoch != 1234567890 || p.Agent.Path != "/sbin/init" ||
		len(p.Agent.SHA256) != 64 || p.Agent.Version == "" || len(p.Options.Extras) != 3 || p.Options.Modules != mods || p.Arch != runtime.GOARCH {
		t.Errorf("provenance %+v", p)
	}
	// No temporary directories next to the output.
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 1 {
		t.Errorf("siblings of the output: %v", ents)
	}
}

func TestBuildService(t *testing.T) {
	agent := testAgent(t)
	out := filepath.Join(t.TempDir(), "rootfs")
	if err := Build(context.Background(), Options{Agent: agent, Out: out}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(out, AgentServicePath)); err != nil || fi.Mode() != 0o755 {
		t.Fatalf("agent: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(out, "etc/resolv.conf")); err != nil || fi.Size() != 0 {
		t.Errorf("etc/resolv.conf: %v, want an empty file", err)
	}
	unit, err := os.ReadFile(filepath.Join(out, "usr/lib/systemd/system/kata-agent.service"))
	if err != nil || !strings.Contains(string(unit), "ExecStart=/usr/bin/kata-agent") {
		t.Fatalf("unit: %v\n%s", err, unit)
	}
	if _, err := os.Stat(filepath.Join(out, "usr/lib/systemd/system/kata-containers.target")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"init", "sbin/init"} {
		if _, err := os.Lstat(filepath.Join(out, p)); !os.IsNotExist(err) {
			t.Errorf("%s exists in a service-mode rootfs", p)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	agent := testAgent(t)
	dir := t.TempDir()
	nonEmpty := filepath.Join(dir, "full")
	os.MkdirAll(filepath.Join(nonEmpty, "x"), 0o755)
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no agent", Options{Out: filepath.Join(dir, "a")}, "no agent"},
		{"missing agent", Options{Agent: filepath.Join(dir, "nope"), Out: filepath.Join(dir, "a")}, "no such file"},
		{"not ELF", Options{Agent: script, Out: filepath.Join(dir, "a")}, "not an ELF"},
		{"dynamic", Options{Agent: "/bin/ls", Out: filepath.Join(dir, "a")}, "dynamically linked"},
		{"wrong arch", Options{Agent: agent, Out: filepath.Join(dir, "a"), Arch: Arch(other)}, "target architecture is " + other},
		{"not empty", Options{Agent: agent, Out: nonEmpty}, "not empty"},
		{"bad extra", Options{Agent: agent, Out: filepath.Join(dir, "a"), Extras: []Extra{{Src: filepath.Join(dir, "nope"), Dst: "/x"}}}, "--extra"},
		{"extra onto root", Options{Agent: agent, Out: filepath.Join(dir, "a"), Extras: []Extra{{Src: script, Dst: "/"}}}, "rootfs itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Build(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "a")); !os.IsNotExist(err) {
				t.Fatal("output created by a failed build")
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.Contains(e.Name(), ".tmp-") {
					t.Fatalf("temporary %s left", e.Name())
				}
			}
		})
	}
	// --force replaces a non-empty output.
	if err := Build(context.Background(), Options{Agent: agent, Out: nonEmpty, Force: true, AgentInit: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(nonEmpty, "x")); !os.IsNotExist(err) {
		t.Error("--force kept the old content")
	}
}

func TestCheckInitNotExecutable(t *testing.T) {
	agent := testAgent(t)
	out := filepath.Join(t.TempDir(), "rootfs")
	if err := Build(context.Background(), Options{Agent: agent, Out: out, AgentInit: true}); err != nil {
		t.Fatal(err)
	}
	if err := Check(out, Arch(runtime.GOARCH)); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(out, AgentInitPath), 0o644)
	if err := Check(out, Arch(runtime.GOARCH)); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Fatalf("got %v", err)
	}
}

func TestDevicesManifest(t *testing.T) {
	in := "# comment\n\nnod /dev/console 0600 0 0 c 5 1\nnod dev/sda 0660 0 6 b 8 0\n"
	devs, err := ParseDevices(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Device{{Path: "dev/console", Type: 'c', Perm: 0o600, Major: 5, Minor: 1}, {Path: "dev/sda", Type: 'b', Perm: 0o660, GID: 6, Major: 8}}
	if len(devs) != 2 || devs[0] != want[0] || devs[1] != want[1] {
		t.Fatalf("got %+v", devs)
	}
	var sb strings.Builder
	WriteDevices(&sb, devs)
	again, err := ParseDevices(strings.NewReader(sb.String()))
	if err != nil || len(again) != 2 || again[0] != devs[0] || again[1] != devs[1] {
		t.Fatalf("round trip: %+v %v\n%s", again, err, sb.String())
	}
	for _, bad := range []string{
		"nod /dev/x 0600 0 0 c 5", "file /x 0600 0 0 c 5 1", "nod /dev/x 0600 0 0 p 5 1",
		"nod /dev/x 0900 0 0 c 5 1", "nod /dev/x 020600 0 0 c 5 1", "nod / 0600 0 0 c 5 1",
	} {
		if _, err := ParseDevices(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestParseExtraAndArch(t *testing.T) {
	e, err := ParseExtra("/a:b:/etc/x")
	if err != nil || e.Src != "/a:b" || e.Dst != "/etc/x" {
		t.Errorf("ParseExtra: %+v %v", e, err)
	}
	for _, bad := range []string{"nodst", ":x", "x:"} {
		if _, err := ParseExtra(bad); err == nil {
			t.Errorf("ParseExtra(%q) ok", bad)
		}
	}
	for in, want := range map[string]Arch{"x86_64": "amd64", "aarch64": "arm64", "s390x": "s390x", "": Arch(runtime.GOARCH)} {
		if got, err := ParseArch(in); err != nil || got != want {
			t.Errorf("ParseArch(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseArch("mips"); err == nil {
		t.Error("mips accepted")
	}
}

// TestPinnedVersions keeps the debug shell's pinned module versions equal
// to go.mod's, so builds outside the source tree use the same code.
func TestPinnedVersions(t *testing.T) {
	f, err := os.Open("../go.mod")
	if err != nil {
		t.Skip("no go.mod: not in the source tree")
	}
	defer f.Close()
	want := map[string]string{"github.com/u-root/u-root": uRootVersion, "mvdan.cc/sh/v3": shVersion}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) >= 2 {
			if v, ok := want[fl[0]]; ok {
				if fl[1] != v {
					t.Errorf("go.mod has %s %s, debugshell.go pins %s", fl[0], fl[1], v)
				}
				delete(want, fl[0])
			}
		}
	}
	if len(want) > 0 {
		t.Errorf("not in go.mod: %v", want)
	}
}

// TestDebugShell builds the shell for the host, installs it in a rootfs and
// runs it: a script with applets in-process and through their links.
func TestDebugShell(t *testing.T) {
	if testing.Short() {
		t.Skip("builds u-root commands with the Go toolchain")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the Go toolchain")
	}
	agent := testAgent(t)
	out := filepath.Join(t.TempDir(), "rootfs")
	if err := Build(context.Background(), Options{Agent: agent, Out: out, AgentInit: true, DebugShell: true}); err != nil {
		t.Fatal(err)
	}
	sh := filepath.Join(out, "bin/sh")
	if err := CheckStaticELF(sh, Arch(runtime.GOARCH)); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(sh)
	t.Logf("debug shell: %d KiB", fi.Size()>>10)
	work := t.TempDir()
	cmd := exec.Command(sh, "-c", `mkdir -p d/e && echo hello > d/e/f && cat d/e/f && ls d/e && for i in 1 2; do echo n$i; done; exit 7`)
	cmd.Dir = work
	o, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err == nil || !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("sh -c: %v\n%s", err, o)
	}
	if got := string(o); got != "hello\nf\nn1\nn2\n" {
		t.Fatalf("sh -c output %q", got)
	}
	o, err = exec.Command(filepath.Join(out, "bin/ls"), filepath.Join(work, "d")).CombinedOutput()
	if err != nil || string(o) != "e\n" {
		t.Fatalf("bin/ls link: %v %q", err, o)
	}
	// Interactive: commands from stdin.
	cmd = exec.Command(sh)
	cmd.Dir = work
	cmd.Stdin = strings.NewReader("cat d/e/f\n")
	o, _ = cmd.CombinedOutput()
	if !strings.Contains(string(o), "hello") {
		t.Fatalf("interactive: %q", o)
	}
}
