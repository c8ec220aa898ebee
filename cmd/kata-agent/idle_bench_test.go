package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
)

// Targets for an idle agent; see BenchmarkIdleAgent.
const (
	targetRssAnonKiB     = 2 << 10
	targetStrippedMiB    = 18
	settleTime           = 3 * time.Second
	defaultAgentBinary   = "../../bin/kata-agent"
	agentBinaryEnv       = "KATA_AGENT_BIN"
	benchSettleOverrides = "KATA_AGENT_BENCH_SETTLE"
)

// BenchmarkIdleAgent measures the built agent (bin/kata-agent, or
// $KATA_AGENT_BIN): it serves on a unix socket, answers b.N Health.Check
// calls alternating gRPC and ttrpc, and is left to settle; then VmRSS and
// RssAnon are read from /proc/PID/status, with the host connections open and
// again after they close. Most of a Go binary's VmRSS is its own file pages;
// RssAnon is what it allocates. It also reports the stripped binary size.
//
//	make agent && go test -run '^$' -bench IdleAgent -benchtime 20x ./cmd/kata-agent/
func BenchmarkIdleAgent(b *testing.B) {
	bin := os.Getenv(agentBinaryEnv)
	if bin == "" {
		bin = defaultAgentBinary
	}
	if _, err := os.Stat(bin); err != nil {
		b.Skipf("no agent binary (run make agent or set %s): %v", agentBinaryEnv, err)
	}
	settle := settleTime
	if s := os.Getenv(benchSettleOverrides); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatal(err)
		}
		settle = d
	}
	// Kata guests have one vCPU by default, where the Go runtime runs one P;
	// on this host the default is one P per CPU.
	b.Run("host-cpus", func(b *testing.B) { benchIdle(b, bin, settle, nil) })
	b.Run("1-vcpu", func(b *testing.B) { benchIdle(b, bin, settle, []string{"GOMAXPROCS=1"}) })
}

func benchIdle(b *testing.B, bin string, settle time.Duration, env []string) {
	dir := b.TempDir()
	addr := "unix://" + filepath.Join(dir, "agent.sock")
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "KATA_AGENT_SERVER_ADDR="+addr, "KATA_AGENT_LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.WaitReady(ctx, addr, client.TTRPC); err != nil {
		b.Fatal(err)
	}
	var clients []client.Client
	for _, p := range []client.Protocol{client.GRPC, client.TTRPC} {
		c, err := client.New(ctx, addr, p)
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := clients[i%2].Check(ctx, &agentpb.CheckRequest{})
		if err != nil || r.GetStatus() != agentpb.HealthCheckResponse_SERVING {
			b.Fatalf("Check over %s: %v, %v", clients[i%2].Protocol(), r, err)
		}
	}
	b.StopTimer()

	time.Sleep(settle)
	connected, err := procStatus(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range clients {
		c.Close()
	}
	time.Sleep(settle)
	closed, err := procStatus(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	size, stripped, err := strippedSize(bin, dir)
	if err != nil {
		b.Fatal(err)
	}

	b.ReportMetric(float64(connected["RssAnon"]), "RssAnon-KiB")
	b.ReportMetric(float64(connected["VmRSS"]), "VmRSS-KiB")
	b.ReportMetric(float64(stripped), "stripped-bytes")
	mib := func(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }
	kib := func(n int64) string { return fmt.Sprintf("%d KiB", n) }
	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "OVER"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-44s %12s %14s\n", fmt.Sprintf("idle kata-agent (%d checks) %v", b.N, env), "value", "target")
	row := func(name, v, target string) { fmt.Fprintf(&sb, "%-44s %12s %14s\n", name, v, target) }
	row("RssAnon, host connected", kib(connected["RssAnon"]), "≤ 2048 KiB "+verdict(connected["RssAnon"] <= targetRssAnonKiB))
	row("RssAnon, host disconnected", kib(closed["RssAnon"]), "≤ 2048 KiB "+verdict(closed["RssAnon"] <= targetRssAnonKiB))
	row("VmRSS, host connected", kib(connected["VmRSS"]), "")
	row("VmRSS, host disconnected", kib(closed["VmRSS"]), "")
	row("RssFile, host connected", kib(connected["RssFile"]), "")
	row("threads", strconv.FormatInt(connected["Threads"], 10), "")
	row("binary size", mib(size), "")
	row("stripped binary size", mib(stripped), fmt.Sprintf("≤ %d MiB %s", targetStrippedMiB, verdict(stripped <= targetStrippedMiB<<20)))
	b.Log(sb.String())
}

// procStatus reads the kB fields (and Threads) of /proc/PID/status.
func procStatus(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
			m[k] = n
		}
	}
	for _, k := range []string{"VmRSS", "RssAnon", "RssFile", "Threads"} {
		if _, ok := m[k]; !ok {
			return nil, fmt.Errorf("/proc/%d/status has no %s", pid, k)
		}
	}
	return m, sc.Err()
}

// strippedSize returns the size of bin and of a stripped copy of it.
func strippedSize(bin, dir string) (size, stripped int64, err error) {
	fi, err := os.Stat(bin)
	if err != nil {
		return 0, 0, err
	}
	out := filepath.Join(dir, "kata-agent.stripped")
	if msg, err := exec.Command("strip", "-o", out, bin).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("strip: %v: %s", err, msg)
	}
	sfi, err := os.Stat(out)
	if err != nil {
		return 0, 0, err
	}
	return fi.Size(), sfi.Size(), nil
}
