package agent

import (
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
	"golang.org/x/sys/unix"
)

// reportMedian adds the median of ds in milliseconds to the benchmark.
func reportMedian(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "ms-median")
}

// cpuTime is the CPU time (user and system) used so far by this process and
// its reaped children: the agent, libcontainer's init re-execs and the
// container processes. It is steadier than wall time on a shared machine.
func cpuTime(b *testing.B) time.Duration {
	var t time.Duration
	for _, who := range []int{unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		if err := unix.Getrusage(who, &ru); err != nil {
			b.Fatal(err)
		}
		t += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return t
}

// reportCPU adds the CPU time per operation, in milliseconds.
func reportCPU(b *testing.B, total time.Duration) {
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// BenchmarkCreateStartWait measures create, start and wait of `true`
// through the ttrpc server (removal is not timed).
func BenchmarkCreateStartWait(b *testing.B) {
	h := newHarness(b, client.TTRPC)
	var ds []time.Duration
	var cpu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := newID()
		c0 := cpuTime(b)
		t0 := time.Now()
		h.create(id, h.spec(id, "true"))
		if _, err := h.c.StartContainer(ctx(b), &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
			b.Fatal(err)
		}
		if code := h.wait(id, ""); code != 0 {
			b.Fatalf("exit %d", code)
		}
		ds = append(ds, time.Since(t0))
		cpu += cpuTime(b) - c0
		b.StopTimer()
		h.remove(id)
		b.StartTimer()
	}
	reportMedian(b, ds)
	reportCPU(b, cpu)
}

// BenchmarkExec measures exec and wait of `true` in a running container.
func BenchmarkExec(b *testing.B) {
	h := newHarness(b, client.TTRPC)
	id := h.start("sleep", "100000")
	var ds []time.Duration
	b.ResetTimer()
	c0 := cpuTime(b)
	for i := 0; i < b.N; i++ {
		e := "b" + strconv.Itoa(i)
		t0 := time.Now()
		h.exec(id, e, false, "true")
		if code := h.wait(id, e); code != 0 {
			b.Fatalf("exit %d", code)
		}
		ds = append(ds, time.Since(t0))
	}
	reportMedian(b, ds)
	reportCPU(b, cpuTime(b)-c0)
}

// BenchmarkReadStdout measures ReadStdout throughput with 1 MiB reads.
func BenchmarkReadStdout(b *testing.B) {
	h := newHarness(b, client.TTRPC)
	const size = 256 << 20
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		id := h.start("dd", "if=/dev/zero", "bs=1M", "count="+strconv.Itoa(size>>20))
		b.StartTimer()
		n := 0
		for {
			resp, err := h.c.ReadStdout(ctx(b), &agentpb.ReadStreamRequest{ContainerId: id, Len: 1 << 20})
			if isEOF(err) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n += len(resp.Data)
		}
		if n != size {
			b.Fatalf("read %d bytes, want %d", n, size)
		}
		b.StopTimer()
		h.wait(id, "")
		h.remove(id)
		b.StartTimer()
	}
}

func rssKiB(b *testing.B) int {
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// BenchmarkRSS10Containers reports the agent's RSS with 10 running
// containers (the agent is the test process).
func BenchmarkRSS10Containers(b *testing.B) {
	h := newHarness(b, client.TTRPC)
	debug.FreeOSMemory()
	before := rssKiB(b)
	for i := 0; i < b.N; i++ {
		var ids []string
		for j := 0; j < 10; j++ {
			ids = append(ids, h.start("sleep", "100000"))
		}
		debug.FreeOSMemory()
		b.ReportMetric(float64(rssKiB(b))/1024, "MiB-rss")
		b.ReportMetric(float64(before)/1024, "MiB-rss-before")
		b.StopTimer()
		for _, id := range ids {
			h.remove(id)
		}
		b.StartTimer()
	}
}
