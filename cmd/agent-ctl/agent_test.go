package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/kguest/kguest/protocols/client"
)

// realAgent starts bin/kata-agent (or $KATA_AGENT_BIN) on a unix socket.
func realAgent(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the agent binary")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the agent creates namespaces, cgroups and mounts")
	}
	bin := os.Getenv("KATA_AGENT_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin/kata-agent")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("needs the agent binary (make agent, or set KATA_AGENT_BIN): %v", err)
	}
	sock := "unix://" + filepath.Join(t.TempDir(), "agent.sock")
	var logs bytes.Buffer
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "KATA_AGENT_SERVER_ADDR="+sock)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctl("", "--addr", sock, "destroy-sandbox")
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := client.WaitReady(ctx, sock, client.TTRPC); err != nil {
		t.Fatalf("agent: %v\n%s", err, logs.String())
	}
	return sock
}

// busyboxRootfs lays out a root filesystem with the static busybox and
// relative applet links (absolute ones would point outside the container).
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	const busybox = "/bin/busybox"
	b, err := os.ReadFile(busybox)
	if err != nil {
		t.Skipf("needs %s (Debian busybox-static): %v", busybox, err)
	}
	dir := t.TempDir()
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// TestAgainstAgent drives the real agent through every lifecycle verb.
func TestAgainstAgent(t *testing.T) {
	sock := realAgent(t)
	rootfs := busyboxRootfs(t)
	for _, proto := range []string{"grpc", "ttrpc"} {
		t.Run(proto, func(t *testing.T) {
			g := []string{"--addr", sock, "--proto", proto, "--timeout", "30s"}
			id := "ctl-" + proto
			steps := []struct {
				name     string
				stdin    string
				args     []string
				wantCode int
				wantOut  string
				wantErr  string
			}{
				{name: "check", args: []string{"check"}, wantOut: "SERVING\n"},
				{name: "run", args: []string{"run", "--rootfs", rootfs, "--", "sh", "-c", "echo hello; echo oops >&2; exit 7"},
					wantCode: 7, wantOut: "hello\n", wantErr: "oops\n"},
				{name: "run stdin", stdin: "line one\nline two\n", args: []string{"run", "--rootfs", rootfs, "--", "sh", "-c", "cat; echo end"},
					wantOut: "line one\nline two\nend\n"},
				{name: "run env and memory", args: []string{"run", "--rootfs", rootfs, "--env", "FOO=bar", "--memory", "67108864", "--",
					"sh", "-c", "echo $FOO; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"},
					wantOut: "bar\n67108864\n"},
				{name: "create", args: []string{"create", "--id", id, "--rootfs", rootfs, "--", "sleep", "1000"}},
				{name: "start", args: []string{"start", "--id", id}},
				{name: "exec", args: []string{"exec", "--id", id, "--", "sh", "-c", "echo from exec; exit 3"}, wantCode: 3, wantOut: "from exec\n"},
				{name: "exec stdin", stdin: "abc", args: []string{"exec", "--id", id, "--", "cat"}, wantOut: "abc"},
				{name: "pause", args: []string{"pause", "--id", id}},
				{name: "resume", args: []string{"resume", "--id", id}},
				{name: "update", args: []string{"update", "--id", id, "--memory", "50331648"}},
				{name: "limit updated", args: []string{"exec", "--id", id, "--", "sh", "-c",
					"cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"}, wantOut: "50331648\n"},
				{name: "kill", args: []string{"kill", "--id", id, "--signal", "KILL"}},
				{name: "wait", args: []string{"wait", "--id", id}, wantCode: 137, wantOut: "137\n"},
				{name: "rm", args: []string{"rm", "--id", id, "--timeout", "10"}},
				{name: "start removed", args: []string{"start", "--id", id}, wantCode: 1, wantErr: "agent-ctl: NotFound: "},
			}
			for _, st := range steps {
				r := ctl(st.stdin, append(g, st.args...)...)
				if r.code != st.wantCode || r.stdout != st.wantOut || !strings.Contains(r.stderr, st.wantErr) {
					t.Errorf("%s: exit %d stdout %q stderr %q; want exit %d stdout %q stderr containing %q",
						st.name, r.code, r.stdout, r.stderr, st.wantCode, st.wantOut, st.wantErr)
				}
			}
		})
	}
}

// TestAgainstAgentTTY runs a tty container from a local terminal: the window
// size reaches the container and the exit status comes back.
func TestAgainstAgentTTY(t *testing.T) {
	sock := realAgent(t)
	rootfs := busyboxRootfs(t)
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("needs a pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 33, Cols: 101}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run([]string{"--addr", sock, "run", "--tty", "--rootfs", rootfs, "--", "sh", "-c", "tty; stty size; echo TERM=$TERM; exit 5"},
		tty, &out, &errOut)
	if code != 5 {
		t.Errorf("exit %d, want 5 (stderr %q)", code, errOut.String())
	}
	for _, want := range []string{"/dev/pts/", "33 101", "TERM=xterm"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output %q lacks %q", out.String(), want)
		}
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr %q", errOut.String())
	}
}
