package agent

import (
	"bytes"
	"context"
	"reflect"
	"strconv"
	"strings"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/procfs"
	"github.com/prometheus/procfs/blockdevice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GetMetrics returns the agent's and the guest's metrics in the Prometheus
// text format. Each call gathers from a fresh private registry.
func (a *Agent) GetMetrics(context.Context, *agentpb.GetMetricsRequest) (*agentpb.Metrics, error) {
	text, err := gatherMetrics("/proc", "/sys")
	if err != nil {
		return nil, status.Errorf(codes.Internal, "metrics: %v", err)
	}
	return &agentpb.Metrics{Metrics: text}, nil
}

func gatherMetrics(procRoot, sysRoot string) (string, error) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "kata_agent"}),
		collectors.NewGoCollector(),
		&guestCollector{procRoot: procRoot, sysRoot: sysRoot},
	)
	mfs, err := reg.Gather()
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return "", err
		}
	}
	return buf.String(), nil
}

var (
	guestMeminfo = prometheus.NewDesc("kata_guest_meminfo", "Guest memory statistics from /proc/meminfo, in bytes.", []string{"item"}, nil)
	guestLoad    = prometheus.NewDesc("kata_guest_load", "Guest load averages.", []string{"item"}, nil)
	guestCPUTime = prometheus.NewDesc("kata_guest_cpu_time", "Guest CPU time in seconds, per CPU and mode.", []string{"cpu", "item"}, nil)
	guestTasks   = prometheus.NewDesc("kata_guest_tasks", "Guest processes by state.", []string{"item"}, nil)
	guestDisk    = prometheus.NewDesc("kata_guest_diskstat", "Guest block device counters from /proc/diskstats.", []string{"disk", "item"}, nil)
	guestNetDev  = prometheus.NewDesc("kata_guest_netdev_stat", "Guest network interface counters from /proc/net/dev.", []string{"interface", "item"}, nil)
)

// guestCollector reads the guest's /proc on each scrape.
type guestCollector struct {
	procRoot, sysRoot string
}

func (c *guestCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{guestMeminfo, guestLoad, guestCPUTime, guestTasks, guestDisk, guestNetDev} {
		ch <- d
	}
}

func (c *guestCollector) Collect(ch chan<- prometheus.Metric) {
	fs, err := procfs.NewFS(c.procRoot)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(guestMeminfo, err)
		return
	}
	if mi, err := fs.Meminfo(); err == nil {
		v := reflect.ValueOf(mi)
		for i := 0; i < v.NumField(); i++ {
			name := v.Type().Field(i).Name
			f := v.Field(i)
			item, ok := strings.CutSuffix(name, "Bytes")
			if !ok || f.Kind() != reflect.Pointer || f.IsNil() {
				continue
			}
			ch <- prometheus.MustNewConstMetric(guestMeminfo, prometheus.GaugeValue, float64(f.Elem().Uint()), item)
		}
	}
	if la, err := fs.LoadAvg(); err == nil {
		ch <- prometheus.MustNewConstMetric(guestLoad, prometheus.GaugeValue, la.Load1, "load1")
		ch <- prometheus.MustNewConstMetric(guestLoad, prometheus.GaugeValue, la.Load5, "load5")
		ch <- prometheus.MustNewConstMetric(guestLoad, prometheus.GaugeValue, la.Load15, "load15")
	}
	if st, err := fs.Stat(); err == nil {
		emit := func(cpu string, s procfs.CPUStat) {
			for _, m := range []struct {
				mode string
				v    float64
			}{{"user", s.User}, {"nice", s.Nice}, {"system", s.System}, {"idle", s.Idle}, {"iowait", s.Iowait},
				{"irq", s.IRQ}, {"softirq", s.SoftIRQ}, {"steal", s.Steal}, {"guest", s.Guest}, {"guest_nice", s.GuestNice}} {
				ch <- prometheus.MustNewConstMetric(guestCPUTime, prometheus.CounterValue, m.v, cpu, m.mode)
			}
		}
		emit("total", st.CPUTotal)
		for id, s := range st.CPU {
			emit("cpu"+strconv.FormatInt(id, 10), s)
		}
		ch <- prometheus.MustNewConstMetric(guestTasks, prometheus.GaugeValue, float64(st.ProcessesRunning), "running")
		ch <- prometheus.MustNewConstMetric(guestTasks, prometheus.GaugeValue, float64(st.ProcessesBlocked), "blocked")
	}
	if bfs, err := blockdevice.NewFS(c.procRoot, c.sysRoot); err == nil {
		if ds, err := bfs.ProcDiskstats(); err == nil {
			for _, d := range ds {
				for _, m := range []struct {
					item string
					v    uint64
				}{{"reads", d.ReadIOs}, {"reads_merged", d.ReadMerges}, {"sectors_read", d.ReadSectors}, {"read_ms", d.ReadTicks},
					{"writes", d.WriteIOs}, {"writes_merged", d.WriteMerges}, {"sectors_written", d.WriteSectors}, {"write_ms", d.WriteTicks},
					{"io_in_progress", d.IOsInProgress}, {"io_ms", d.IOsTotalTicks}, {"weighted_io_ms", d.WeightedIOTicks}} {
					ch <- prometheus.MustNewConstMetric(guestDisk, prometheus.CounterValue, float64(m.v), d.DeviceName, m.item)
				}
			}
		}
	}
	if nd, err := fs.NetDev(); err == nil {
		for name, l := range nd {
			for _, m := range []struct {
				item string
				v    uint64
			}{{"rx_bytes", l.RxBytes}, {"rx_packets", l.RxPackets}, {"rx_errors", l.RxErrors}, {"rx_dropped", l.RxDropped},
				{"tx_bytes", l.TxBytes}, {"tx_packets", l.TxPackets}, {"tx_errors", l.TxErrors}, {"tx_dropped", l.TxDropped}} {
				ch <- prometheus.MustNewConstMetric(guestNetDev, prometheus.CounterValue, float64(m.v), name, m.item)
			}
		}
	}
}
