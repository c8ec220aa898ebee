package guest

import (
	"testing"
	"time"
)

func TestMetrics(t *testing.T) {
	m := ParseMetrics(`# HELP kata_guest_cpu_time x
kata_guest_cpu_time{cpu="total",item="user"} 1.5
kata_guest_cpu_time{cpu="total",item="system"} 0.5
kata_guest_cpu_time{cpu="total",item="idle"} 2
kata_guest_cpu_time{cpu="total",item="guest"} 9
kata_guest_cpu_time{cpu="cpu0",item="idle"} 1
kata_guest_cpu_time{cpu="cpu1",item="idle"} 1
kata_guest_meminfo{item="MemTotal"} 2.097152e+08
kata_guest_meminfo{item="MemAvailable"} 1.048576e+08
`)
	up, err := GuestUptime(m)
	if err != nil || up != 2*time.Second {
		t.Errorf("GuestUptime = %v, %v; want 2s", up, err)
	}
	used, total, err := MemInUseKiB(m)
	if err != nil || used != 102400 || total != 204800 {
		t.Errorf("MemInUseKiB = %d, %d, %v", used, total, err)
	}
	if _, err := GuestUptime(map[string]float64{}); err == nil {
		t.Error("no error without CPU times")
	}
}
