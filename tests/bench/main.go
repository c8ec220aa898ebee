// Command bench measures the whole path under QEMU (TCG): boot to
// agent-ready, container and exec latency, ReadStdout throughput over the
// serial channel, agent and guest memory, artifact sizes and build times,
// and the same VM on a kernel built from Debian's own config. It prints a
// table and writes the same figures as JSON.
//
//	go run ./tests/bench [-boots 10] [-json bench.json] [-debian-kernel=true] [-mmio]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
	"github.com/kguest/kguest/tests/artifacts"
	"github.com/kguest/kguest/tests/guest"
	"github.com/kguest/kguest/tests/qemu"
)

var (
	boots      = flag.Int("boots", 10, "boots to measure boot-to-ready")
	runs       = flag.Int("runs", 10, "container runs and execs to measure")
	jsonOut    = flag.String("json", "bench.json", "write the figures as JSON here too (empty: stdout only)")
	debian     = flag.Bool("debian-kernel", true, "also boot a kernel built from Debian's own config (apt package linux-image-*-amd64)")
	variants   = flag.Bool("variants", true, "also measure guest memory at ready on microvm with virtio-mmio, and on q35 with the initrd and with a DAX root (x86_64)")
	debianPkg  = flag.String("debian-package", "linux-image-amd64", "Debian kernel package (a metapackage is followed to its image)")
	memMiB     = flag.Int("mem", 256, "guest memory (MiB)")
	keepGoing  = flag.Bool("k", true, "report what could be measured when a step fails")
	kernelFlag = flag.String("kernel", "", "boot this kernel instead of osbuilder's")
	initrdFlag = flag.String("initrd", "", "boot this initrd instead of a fresh agent-only one")
	cmdline    = flag.String("cmdline", "", "extra kernel command line")
	mmio       = flag.Bool("mmio", false, "x86_64 microvm: virtio devices on virtio-mmio, not the PCIe host bridge")
	arch       = qemu.HostArch()
	logf       = func(format string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...) }
	readyLimit = 5 * time.Minute
)

// Stat summarises repeated measurements in milliseconds.
type Stat struct {
	N      int     `json:"n"`
	Median float64 `json:"median_ms"`
	Min    float64 `json:"min_ms"`
	Max    float64 `json:"max_ms"`
	P90    float64 `json:"p90_ms"`
}

func stat(ds []time.Duration) *Stat {
	if len(ds) == 0 {
		return nil
	}
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	sort.Float64s(ms)
	med := ms[len(ms)/2]
	if len(ms)%2 == 0 {
		med = (ms[len(ms)/2-1] + ms[len(ms)/2]) / 2
	}
	return &Stat{N: len(ms), Median: round(med), Min: round(ms[0]), Max: round(ms[len(ms)-1]), P90: round(ms[int(math.Ceil(0.9*float64(len(ms))))-1])}
}

func round(f float64) float64 { return math.Round(f*10) / 10 }

// Mem is what /proc/1/status and /proc/meminfo say in the guest.
type Mem struct {
	VmRSSKiB     int `json:"vmrss_kib"`
	RssAnonKiB   int `json:"rssanon_kib"`
	RssFileKiB   int `json:"rssfile_kib"`
	RssShmemKiB  int `json:"rssshmem_kib"`
	MemTotalKiB  int `json:"memtotal_kib"`
	MemAvailKiB  int `json:"memavailable_kib"`
	GuestUsedKiB int `json:"guest_used_kib"` // MemTotal - MemAvailable
	// The agent's goroutines (go_goroutines from GetMetrics, asked right
	// after the probe): a count that does not come back down after the
	// containers are removed is a leak.
	Goroutines int `json:"goroutines,omitempty"`
	// Where the guest's memory is, from /proc/meminfo (KiB).
	Meminfo map[string]int `json:"meminfo,omitempty"`
	// The agent's Go runtime view (goMemKeys from GetMetrics, KiB; the
	// GC count as is): live heap against garbage and runtime overhead.
	GoMem map[string]int `json:"go_memstats,omitempty"`
}

// goMemKeys are the agent's Go runtime metrics kept with each probe.
var goMemKeys = []string{"go_memstats_heap_inuse_bytes", "go_memstats_heap_alloc_bytes", "go_memstats_heap_idle_bytes",
	"go_memstats_heap_released_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_gc_sys_bytes",
	"go_memstats_mspan_inuse_bytes", "go_memstats_other_sys_bytes", "go_memstats_next_gc_bytes", "go_gc_duration_seconds_count"}

// meminfoKeys are the /proc/meminfo lines kept to explain guest memory in
// use: tmpfs (the initramfs), kernel allocations, user memory.
var meminfoKeys = []string{"MemFree", "Cached", "Shmem", "AnonPages", "Mapped", "Slab", "SReclaimable",
	"SUnreclaim", "KernelStack", "PageTables", "Percpu", "VmallocUsed", "Unevictable"}

// Kernel is one kernel's boot figures.
type Kernel struct {
	Name        string `json:"name"`
	Path        string `json:"path"`
	SizeBytes   int64  `json:"size_bytes"`
	BootToReady *Stat  `json:"boot_to_ready"`
	// The guest's own uptime at the first answer (CPU time the guest
	// kernel accounted, from GetMetrics right after ready).
	GuestUptime *Stat `json:"guest_uptime_at_ready"`
	// Guest memory in use (MemTotal − MemAvailable) right after ready,
	// before any container, from GetMetrics.
	GuestUsedAtReadyKiB int `json:"guest_used_at_ready_kib"`
	// The same moment's /proc/meminfo lines (meminfoKeys, KiB).
	GuestMeminfoAtReady map[string]int `json:"guest_meminfo_at_ready,omitempty"`
	IdleMem             *Mem           `json:"idle_memory,omitempty"`
}

// Variant is guest memory in use at agent-ready on another machine or root.
type Variant struct {
	Name                string         `json:"name"`
	BootToReady         *Stat          `json:"boot_to_ready"`
	GuestUsedAtReadyKiB int            `json:"guest_used_at_ready_kib"`
	GuestMeminfoAtReady map[string]int `json:"guest_meminfo_at_ready,omitempty"`
}

// Report is everything measured.
type Report struct {
	When     string `json:"when"`
	Host     string `json:"host"`
	Settings string `json:"settings"`

	AgentSizeBytes   int64     `json:"agent_size_bytes"`
	InitrdSizeBytes  int64     `json:"initrd_size_bytes"`
	InitrdBuildMs    float64   `json:"initrd_build_ms"`
	ImageSizeBytes   int64     `json:"image_size_bytes"`
	ImageBuildMs     float64   `json:"image_build_ms"`
	KernelBzImage    int64     `json:"kernel_bzimage_bytes"`
	KernelVmlinux    int64     `json:"kernel_vmlinux_bytes"`
	Kernels          []*Kernel `json:"kernels"`
	CreateStartExit  *Stat     `json:"container_create_start_exit"`
	Exec             *Stat     `json:"exec"`
	ReadStdoutMiBps  float64   `json:"readstdout_mib_per_s"`
	AgentIdle        *Mem      `json:"agent_idle"`
	AgentWith10      *Mem      `json:"agent_with_10_containers"`
	AgentAfterRemove *Mem      `json:"agent_after_removing_them"`
	Errors           []string  `json:"errors,omitempty"`

	// The same agent and kernel on other machines and roots (extra rows,
	// not the reference settings).
	Variants []*Variant `json:"variants,omitempty"`
}

func main() {
	flag.Parse()
	ctx := context.Background()
	transport := "virtio-pci on its PCIe bridge"
	if *mmio {
		transport = "virtio-mmio"
	}
	r := &Report{When: time.Now().UTC().Format(time.RFC3339), Host: hostInfo(),
		Settings: fmt.Sprintf("%s, QEMU TCG, -M microvm (%s), %d MiB, 1 vCPU, gzip initrd", arch, transport, *memMiB)}
	if err := measure(ctx, r); err != nil {
		r.Errors = append(r.Errors, err.Error())
	}
	printTable(os.Stdout, r)
	b, _ := json.MarshalIndent(r, "", "  ")
	fmt.Println(string(b))
	if *jsonOut != "" {
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			logf("write %s: %v", *jsonOut, err)
		}
	}
	if len(r.Errors) > 0 {
		os.Exit(1)
	}
}

func hostInfo() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	model := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
			break
		}
	}
	out, _ := exec.Command(qemu.Binary(arch), "--version").Output()
	return fmt.Sprintf("%s; %s", model, strings.SplitN(string(out), "\n", 2)[0])
}

func (r *Report) fail(step string, err error) error {
	msg := fmt.Sprintf("%s: %v", step, err)
	logf("%s", msg)
	if *keepGoing {
		r.Errors = append(r.Errors, msg)
		return nil
	}
	return fmt.Errorf("%s", msg)
}

func measure(ctx context.Context, r *Report) error {
	tools, err := artifacts.Build(ctx, arch)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	if st, err := os.Stat(tools.Agent); err == nil {
		r.AgentSizeBytes = st.Size()
	}
	var k *artifacts.Kernel
	if *kernelFlag != "" {
		k = &artifacts.Kernel{Dir: filepath.Dir(*kernelFlag), Boot: *kernelFlag, Size: size(*kernelFlag)}
	} else if k, err = artifacts.BuildKernel(ctx, tools, arch); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	for name, p := range map[string]*int64{"bzImage": &r.KernelBzImage, "vmlinux": &r.KernelVmlinux} {
		if st, err := os.Stat(filepath.Join(k.Dir, name)); err == nil {
			*p = st.Size()
		}
	}

	// Build times: a fresh rootfs and initrd/image each time (no cache).
	work, err := os.MkdirTemp("", "kguest-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	initrd := filepath.Join(work, "initrd.img")
	d, err := timeBuild(ctx, tools, work, "initrd", initrd)
	if err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	r.InitrdBuildMs = ms(d)
	r.InitrdSizeBytes = size(initrd)
	if *initrdFlag != "" {
		initrd = *initrdFlag
	}
	image := filepath.Join(work, "image.img")
	if d, err := timeBuild(ctx, tools, work, "image", image); err != nil {
		r.fail("image", err)
	} else {
		r.ImageBuildMs, r.ImageSizeBytes = ms(d), size(image)
	}

	// Boot to ready with our kernel, reference settings.
	ours := &Kernel{Name: "kguest (trimmed config)", Path: k.Boot, SizeBytes: k.Size}
	r.Kernels = append(r.Kernels, ours)
	if err := bootSeries(ctx, ours, qemu.Config{Kernel: k.Boot, Initrd: initrd, MemoryMiB: *memMiB, Cmdline: strings.Fields(*cmdline), MicrovmMMIO: *mmio}, *boots); err != nil {
		if err := r.fail("boot", err); err != nil {
			return err
		}
	}

	if err := workload(ctx, r, tools, k, initrd); err != nil {
		if err := r.fail("workload", err); err != nil {
			return err
		}
	}

	if *variants && arch == "x86_64" {
		for _, v := range []struct {
			name string
			cfg  qemu.Config
		}{
			// virtio-mmio offers 1024 entries per queue where virtio-pci
			// has QEMU's own sizes (128 for virtio-serial).
			{"microvm, virtio-mmio (pcie=off), same gzip initrd", qemu.Config{MicrovmMMIO: true, Initrd: initrd}},
			{"q35, same gzip initrd", qemu.Config{Machine: "q35", Initrd: initrd}},
			// The agent is mapped from the NVDIMM, not copied into RAM.
			{"q35, DAX root (NVDIMM, ext4 -o dax), no initrd", qemu.Config{Machine: "q35", Image: image, RootMode: qemu.RootNVDIMM}},
		} {
			cfg := v.cfg
			cfg.Kernel, cfg.MemoryMiB, cfg.Cmdline = k.Boot, *memMiB, strings.Fields(*cmdline)
			kv := &Kernel{Name: v.name}
			if err := bootSeries(ctx, kv, cfg, 3); err != nil {
				r.fail("variant "+v.name, err)
				continue
			}
			r.Variants = append(r.Variants, &Variant{Name: v.name, BootToReady: kv.BootToReady,
				GuestUsedAtReadyKiB: kv.GuestUsedAtReadyKiB, GuestMeminfoAtReady: kv.GuestMeminfoAtReady})
		}
	}

	if *debian {
		dk, err := debianKernel(ctx, tools, work)
		if err != nil {
			return r.fail("debian kernel", err)
		}
		r.Kernels = append(r.Kernels, dk.k)
		n := *boots / 2
		if n < 3 {
			n = 3
		}
		if err := bootSeries(ctx, dk.k, qemu.Config{Kernel: dk.k.Path, Initrd: dk.initrd, MemoryMiB: *memMiB, Cmdline: []string{"rdinit=/modinit"}}, n); err != nil {
			return r.fail("debian kernel boot", err)
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return round(float64(d.Microseconds()) / 1000) }

func size(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

func osb(ctx context.Context, tools *artifacts.Tools, args ...string) error {
	cmd := exec.CommandContext(ctx, tools.Osbuilder, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("osbuilder %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// timeBuild times `osbuilder rootfs` plus `osbuilder initrd|image` of the
// agent alone.
func timeBuild(ctx context.Context, tools *artifacts.Tools, work, kind, out string, extra ...string) (time.Duration, error) {
	rootfs := filepath.Join(work, kind+"-rootfs")
	os.RemoveAll(rootfs)
	start := time.Now()
	if err := osb(ctx, tools, append([]string{"rootfs", "--agent", tools.Agent, "-o", rootfs}, extra...)...); err != nil {
		return 0, err
	}
	if err := osb(ctx, tools, kind, "--rootfs", rootfs, "-o", out); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// probe reads the agent's /proc/1/status and the guest's /proc/meminfo
// through a short container that has the former bind-mounted.
func probe(ctx context.Context, g *guest.Guest, rootfs, id string) (*Mem, error) {
	spec := guest.Spec(id, guest.SpecOptions{Rootfs: rootfs,
		Args: []string{"sh", "-c", "cat /agent-status /proc/meminfo"},
		Mounts: []*agentpb.Mount{
			{Destination: "/agent-status", Source: "/proc/1/status", Type: "bind", Options: []string{"rbind", "ro"}},
		}})
	res, err := g.Run(ctx, id, spec)
	if err != nil {
		return nil, err
	}
	if res.Status != 0 {
		return nil, fmt.Errorf("probe: status %d: %s", res.Status, res.Stderr)
	}
	m := &Mem{}
	for _, l := range strings.Split(res.Stdout, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			m.VmRSSKiB = v
		case "RssAnon:":
			m.RssAnonKiB = v
		case "RssFile:":
			m.RssFileKiB = v
		case "RssShmem:":
			m.RssShmemKiB = v
		case "MemTotal:":
			m.MemTotalKiB = v
		case "MemAvailable:":
			m.MemAvailKiB = v
		}
		if k := strings.TrimSuffix(f[0], ":"); slices.Contains(meminfoKeys, k) {
			if m.Meminfo == nil {
				m.Meminfo = map[string]int{}
			}
			m.Meminfo[k] = v
		}
	}
	m.GuestUsedKiB = m.MemTotalKiB - m.MemAvailKiB
	if mm, err := g.Metrics(ctx); err == nil {
		m.Goroutines = int(mm["go_goroutines"])
		m.GoMem = map[string]int{}
		for _, k := range goMemKeys {
			if v, ok := mm[k]; ok {
				if strings.HasSuffix(k, "_bytes") {
					v /= 1024
				}
				m.GoMem[k] = int(v)
			}
		}
	}
	return m, nil
}

// bootSeries boots n times and records the host wall time to the first
// answered Health.Check, and on the first boot what the guest says.
func bootSeries(ctx context.Context, k *Kernel, cfg qemu.Config, n int) error {
	var ds, ups []time.Duration
	for i := 0; i < n; i++ {
		cfg.Timeout = 5 * time.Minute
		vm, err := qemu.Start(ctx, cfg)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, readyLimit)
		g, err := guest.Connect(cctx, vm, client.TTRPC)
		cancel()
		if err != nil {
			tail := vm.ConsoleTail(30)
			vm.Stop()
			return fmt.Errorf("boot %d: %w\n%s", i, err, tail)
		}
		ds = append(ds, g.Ready)
		mctx, cancel := context.WithTimeout(ctx, time.Minute)
		m, err := g.Metrics(mctx)
		cancel()
		if err == nil {
			if up, err := guest.GuestUptime(m); err == nil {
				ups = append(ups, up)
			}
			if used, _, err := guest.MemInUseKiB(m); err == nil && i == 0 {
				k.GuestUsedAtReadyKiB = used
				k.GuestMeminfoAtReady = map[string]int{}
				for _, key := range meminfoKeys {
					if v, ok := m[`kata_guest_meminfo{item="`+key+`"}`]; ok {
						k.GuestMeminfoAtReady[key] = int(v / 1024)
					}
				}
			}
		}
		logf("%s: boot %d ready in %s", k.Name, i+1, g.Ready.Round(time.Millisecond))
		g.Close()
		vm.Stop()
	}
	k.BootToReady = stat(ds)
	k.GuestUptime = stat(ups)
	return nil
}

type debianK struct {
	k      *Kernel
	initrd string
}

// debianKernel fetches Debian's prebuilt kernel of the same 6.1 source with
// apt-get download (cached) and builds an initrd with the agent, modinit and
// the virtio modules that kernel needs to reach the agent.
func debianKernel(ctx context.Context, tools *artifacts.Tools, work string) (*debianK, error) {
	dir := filepath.Join(artifacts.CacheDir(), "debian-kernel")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	x := filepath.Join(dir, "x")
	vmlinuz, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
	if len(vmlinuz) == 0 {
		pkg := *debianPkg
		out, err := exec.CommandContext(ctx, "apt-cache", "depends", pkg).Output()
		if err != nil {
			return nil, fmt.Errorf("apt-cache depends %s: %w", pkg, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "Depends: linux-image-") {
				pkg = strings.TrimPrefix(l, "Depends: ")
				break
			}
		}
		// The unsigned package has the same kernel without the signature wrapper.
		if !strings.HasSuffix(pkg, "-unsigned") {
			pkg += "-unsigned"
		}
		cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("apt-get download %s: %w: %s", pkg, err, out)
		}
		debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
		if len(debs) == 0 {
			return nil, fmt.Errorf("apt-get download %s left no .deb", pkg)
		}
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], x).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("dpkg-deb -x: %w: %s", err, out)
		}
		vmlinuz, _ = filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
		if len(vmlinuz) == 0 {
			return nil, fmt.Errorf("no vmlinuz in %s", debs[0])
		}
	}
	ver := strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-")
	mods := filepath.Join(x, "lib", "modules", ver, "kernel")
	modinit := filepath.Join(work, "modinit")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", modinit, "./tests/cmd/modinit")
	build.Dir = tools.Root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build modinit: %w: %s", err, out)
	}
	conf := filepath.Join(work, "modinit.conf")
	var list []string
	extra := []string{"--extra", modinit + ":/modinit", "--extra", conf + ":/etc/modinit.conf"}
	// Both transports: microvm puts its devices on PCIe unless -mmio.
	for _, m := range []string{"drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko", "drivers/virtio/virtio_mmio.ko",
		"drivers/virtio/virtio_pci_legacy_dev.ko", "drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci.ko",
		"drivers/char/virtio_console.ko"} {
		dst := "/lib/modules/" + filepath.Base(m)
		list = append(list, dst)
		extra = append(extra, "--extra", filepath.Join(mods, m)+":"+dst)
	}
	if err := os.WriteFile(conf, []byte(strings.Join(list, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	initrd := filepath.Join(work, "initrd-debian.img")
	if _, err := timeBuild(ctx, tools, work, "initrd", initrd, extra...); err != nil {
		return nil, err
	}
	return &debianK{k: &Kernel{Name: "Debian config (" + ver + ")", Path: vmlinuz[0], SizeBytes: size(vmlinuz[0])}, initrd: initrd}, nil
}

func printTable(w *os.File, r *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "kguest benchmark\t%s\n", r.When)
	fmt.Fprintf(tw, "settings\t%s\n", r.Settings)
	fmt.Fprintf(tw, "host\t%s\n", r.Host)
	fmt.Fprintln(tw, "\t")
	fmt.Fprintln(tw, "measure\tvalue\ttarget")
	for _, k := range r.Kernels {
		if k.BootToReady != nil {
			fmt.Fprintf(tw, "boot to agent-ready, %s\tmedian %.0f ms (min %.0f, max %.0f, n=%d)\t%s\n", k.Name, k.BootToReady.Median, k.BootToReady.Min, k.BootToReady.Max, k.BootToReady.N, target(k == r.Kernels[0], "≤ 2300 ms"))
		}
		fmt.Fprintf(tw, "kernel size, %s\t%s\t\n", k.Name, mib(k.SizeBytes))
	}
	for _, k := range r.Kernels {
		if k.GuestUptime != nil {
			fmt.Fprintf(tw, "guest's own uptime at ready, %s\tmedian %.0f ms (min %.0f, max %.0f)\t\n", k.Name, k.GuestUptime.Median, k.GuestUptime.Min, k.GuestUptime.Max)
		}
		if k.GuestUsedAtReadyKiB > 0 {
			fmt.Fprintf(tw, "guest memory in use at ready, no container, %s\t%d KiB (%.1f MiB)\t%s\n", k.Name, k.GuestUsedAtReadyKiB, float64(k.GuestUsedAtReadyKiB)/1024, target(k == r.Kernels[0], "≤ 24 MiB"))
		}
	}
	for _, v := range r.Variants {
		fmt.Fprintf(tw, "guest memory in use at ready, %s\t%d KiB (%.1f MiB); boot to ready median %.0f ms (n=%d)\t\n", v.Name, v.GuestUsedAtReadyKiB, float64(v.GuestUsedAtReadyKiB)/1024, v.BootToReady.Median, v.BootToReady.N)
	}
	if r.CreateStartExit != nil {
		fmt.Fprintf(tw, "container create→start→exit (echo hi)\tmedian %.0f ms (min %.0f, max %.0f, n=%d)\t≤ 450 ms\n", r.CreateStartExit.Median, r.CreateStartExit.Min, r.CreateStartExit.Max, r.CreateStartExit.N)
	}
	if r.Exec != nil {
		fmt.Fprintf(tw, "exec (true) in a running container\tmedian %.0f ms (min %.0f, max %.0f, n=%d)\t\n", r.Exec.Median, r.Exec.Min, r.Exec.Max, r.Exec.N)
	}
	if r.ReadStdoutMiBps > 0 {
		fmt.Fprintf(tw, "ReadStdout throughput (serial channel)\t%.1f MiB/s\t\n", r.ReadStdoutMiBps)
	}
	for _, m := range []struct {
		name string
		m    *Mem
		tgt  string
	}{{"agent memory idle", r.AgentIdle, "RssAnon ≤ 1536 KiB"}, {"agent memory with 10 containers", r.AgentWith10, ""}, {"agent memory after removing them", r.AgentAfterRemove, "RssAnon ≤ idle + 307 KiB"}} {
		if m.m != nil {
			fmt.Fprintf(tw, "%s\tVmRSS %d KiB, RssAnon %d KiB, RssFile %d KiB, RssShmem %d KiB, %d goroutines\t%s\n", m.name, m.m.VmRSSKiB, m.m.RssAnonKiB, m.m.RssFileKiB, m.m.RssShmemKiB, m.m.Goroutines, m.tgt)
		}
	}
	if r.AgentIdle != nil {
		fmt.Fprintf(tw, "guest memory in use, idle sandbox, virtio-fs, during the probe\t%d KiB (%.1f MiB) of %d KiB\t\n", r.AgentIdle.GuestUsedKiB, float64(r.AgentIdle.GuestUsedKiB)/1024, r.AgentIdle.MemTotalKiB)
	}
	fmt.Fprintf(tw, "static agent size\t%s\t\n", mib(r.AgentSizeBytes))
	fmt.Fprintf(tw, "initrd (agent only, gzip) size / build\t%s / %.0f ms\t\n", mib(r.InitrdSizeBytes), r.InitrdBuildMs)
	fmt.Fprintf(tw, "DAX image size / build\t%s / %.0f ms\t\n", mib(r.ImageSizeBytes), r.ImageBuildMs)
	fmt.Fprintf(tw, "kernel bzImage / vmlinux\t%s / %s\t\n", mib(r.KernelBzImage), mib(r.KernelVmlinux))
	for _, e := range r.Errors {
		fmt.Fprintf(tw, "error\t%s\t\n", strings.ReplaceAll(e, "\n", " "))
	}
	tw.Flush()
}

func target(show bool, s string) string {
	if show {
		return s
	}
	return ""
}

func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

// workload measures containers, exec, throughput and memory in one VM whose
// container rootfs comes over virtio-fs.
func workload(ctx context.Context, r *Report, tools *artifacts.Tools, k *artifacts.Kernel, initrd string) error {
	share, err := os.MkdirTemp("", "kguest-bench-share")
	if err != nil {
		return err
	}
	defer os.RemoveAll(share)
	rootfs := filepath.Join(share, "bb", "rootfs")
	if err := artifacts.BusyboxRootfs(rootfs); err != nil {
		return err
	}
	vm, err := qemu.Start(ctx, qemu.Config{Kernel: k.Boot, Initrd: initrd, MemoryMiB: *memMiB, Timeout: 30 * time.Minute, Cmdline: strings.Fields(*cmdline), MicrovmMMIO: *mmio,
		VirtioFS: []qemu.Share{{Tag: guest.SharedTag, Path: share}}})
	if err != nil {
		return err
	}
	defer vm.Stop()
	cctx, cancel := context.WithTimeout(ctx, readyLimit)
	g, err := guest.Connect(cctx, vm, client.TTRPC)
	cancel()
	if err != nil {
		return fmt.Errorf("%w\n%s", err, vm.ConsoleTail(30))
	}
	defer g.Close()
	ctx, cancel = context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	if _, err := g.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{Hostname: "bench", SandboxId: "bench",
		Storages: []*agentpb.Storage{{Driver: "virtio-fs", Source: guest.SharedTag, Fstype: "virtiofs", MountPoint: guest.SharedDir}}}); err != nil {
		return fmt.Errorf("CreateSandbox: %w", err)
	}
	guestRoot := filepath.Join(guest.SharedDir, "bb", "rootfs")
	// Let the boot settle before reading idle memory.
	time.Sleep(2 * time.Second)
	m, err := probe(ctx, g, guestRoot, "probe-idle")
	if err != nil {
		return fmt.Errorf("idle probe: %w", err)
	}
	r.AgentIdle = m
	if len(r.Kernels) > 0 {
		r.Kernels[0].IdleMem = m
	}

	var ds []time.Duration
	for i := 0; i < *runs; i++ {
		id := fmt.Sprintf("hi-%d", i)
		spec := guest.Spec(id, guest.SpecOptions{Rootfs: guestRoot, Args: []string{"echo", "hi"}})
		start := time.Now()
		if err := g.Create(ctx, id, spec); err != nil {
			return err
		}
		if err := g.Start(ctx, id); err != nil {
			return err
		}
		res, err := g.Collect(ctx, id, id, false)
		d := time.Since(start)
		if err != nil {
			return err
		}
		if res.Stdout != "hi\n" || res.Status != 0 {
			return fmt.Errorf("echo hi: %q status %d", res.Stdout, res.Status)
		}
		ds = append(ds, d)
		if err := g.Remove(ctx, id); err != nil {
			return err
		}
	}
	r.CreateStartExit = stat(ds)
	logf("create→start→exit: %+v", r.CreateStartExit)

	box := guest.Spec("box", guest.SpecOptions{Rootfs: guestRoot, Args: []string{"sleep", "100000"}})
	if err := g.Create(ctx, "box", box); err != nil {
		return err
	}
	if err := g.Start(ctx, "box"); err != nil {
		return err
	}
	ds = nil
	for i := 0; i < 2**runs; i++ {
		start := time.Now()
		res, err := g.Exec(ctx, "box", fmt.Sprintf("x%d", i), false, "true")
		if err != nil {
			return err
		}
		if res.Status != 0 {
			return fmt.Errorf("exec true: status %d", res.Status)
		}
		ds = append(ds, time.Since(start))
	}
	r.Exec = stat(ds)
	logf("exec: %+v", r.Exec)

	const n = 16 << 20
	if _, err := g.ExecProcess(ctx, &agentpb.ExecProcessRequest{ContainerId: "box", ExecId: "tp",
		Process: guest.ProcessSpec(false, "head", "-c", strconv.Itoa(n), "/dev/zero")}); err != nil {
		return err
	}
	start := time.Now()
	out, err := g.ReadAll(ctx, "box", "tp", false)
	d := time.Since(start)
	if err != nil {
		return err
	}
	if len(out) != n {
		return fmt.Errorf("throughput: read %d bytes, want %d", len(out), n)
	}
	if _, err := g.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: "box", ExecId: "tp"}); err != nil {
		return err
	}
	r.ReadStdoutMiBps = round(float64(n) / (1 << 20) / d.Seconds())
	logf("ReadStdout: %.1f MiB/s", r.ReadStdoutMiBps)
	g.SignalProcess(ctx, &agentpb.SignalProcessRequest{ContainerId: "box", Signal: 9})
	g.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: "box", ExecId: "box"})
	if err := g.Remove(ctx, "box"); err != nil {
		return err
	}

	// Ten running containers, then none.
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("ten-%d", i)
		if err := g.Create(ctx, id, guest.Spec(id, guest.SpecOptions{Rootfs: guestRoot, Args: []string{"sleep", "100000"}})); err != nil {
			return err
		}
		if err := g.Start(ctx, id); err != nil {
			return err
		}
	}
	if r.AgentWith10, err = probe(ctx, g, guestRoot, "probe-10"); err != nil {
		return err
	}
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("ten-%d", i)
		g.SignalProcess(ctx, &agentpb.SignalProcessRequest{ContainerId: id, Signal: 9})
		g.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: id, ExecId: id})
		if err := g.Remove(ctx, id); err != nil {
			return err
		}
	}
	time.Sleep(2 * time.Second)
	if r.AgentAfterRemove, err = probe(ctx, g, guestRoot, "probe-after"); err != nil {
		return err
	}
	return nil
}
