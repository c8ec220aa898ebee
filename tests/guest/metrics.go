package guest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
)

// Metrics returns GetMetrics' samples keyed by "name{labels}" as written.
func (g *Guest) Metrics(ctx context.Context) (map[string]float64, error) {
	m, err := g.GetMetrics(ctx, &agentpb.GetMetricsRequest{})
	if err != nil {
		return nil, err
	}
	return ParseMetrics(m.Metrics), nil
}

// ParseMetrics reads Prometheus text samples (comments skipped).
func ParseMetrics(text string) map[string]float64 {
	out := map[string]float64{}
	for _, l := range strings.Split(text, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			continue
		}
		out[l[:i]] = v
	}
	return out
}

// GuestUptime derives the guest's uptime from the CPU time the kernel
// accounted on all CPUs (every mode but guest, which user already counts),
// divided by the number of CPUs: /proc/stat through GetMetrics.
func GuestUptime(m map[string]float64) (time.Duration, error) {
	var total float64
	cpus := 0
	for k, v := range m {
		if !strings.HasPrefix(k, "kata_guest_cpu_time{") {
			continue
		}
		if strings.Contains(k, `cpu="total"`) {
			if !strings.Contains(k, `item="guest`) {
				total += v
			}
		} else if strings.Contains(k, `item="idle"`) {
			cpus++
		}
	}
	if cpus == 0 {
		return 0, fmt.Errorf("no per-CPU times in the metrics")
	}
	return time.Duration(total / float64(cpus) * float64(time.Second)), nil
}

// MemInUseKiB is MemTotal − MemAvailable from the guest's meminfo metrics.
func MemInUseKiB(m map[string]float64) (used, total int, err error) {
	t, ok1 := m[`kata_guest_meminfo{item="MemTotal"}`]
	a, ok2 := m[`kata_guest_meminfo{item="MemAvailable"}`]
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("no MemTotal/MemAvailable in the metrics")
	}
	return int((t - a) / 1024), int(t / 1024), nil
}
