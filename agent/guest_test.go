package agent

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func newGuestAgent(t *testing.T) (*Agent, Config) {
	t.Helper()
	run := t.TempDir()
	cfg := Config{
		RunDir:        run,
		ContainersDir: filepath.Join(run, "shared/containers"),
		SandboxDir:    filepath.Join(run, "sandbox"),
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, cfg
}

func TestCopyFileChunks(t *testing.T) {
	a, cfg := newGuestAgent(t)
	ctx := context.Background()
	target := filepath.Join(cfg.ContainersDir, "c1-abc-resolv.conf")
	data := []byte("nameserver 10.0.0.1\nsearch example.com\n")
	uid, gid := os.Getuid(), os.Getgid()
	for off := 0; off < len(data); off += 16 {
		end := min(off+16, len(data))
		_, err := a.CopyFile(ctx, &agentpb.CopyFileRequest{
			Path: target, FileSize: int64(len(data)), FileMode: unix.S_IFREG | 0o640, DirMode: 0o750,
			Uid: int32(uid), Gid: int32(gid), Offset: int64(off), Data: data[off:end],
		})
		if err != nil {
			t.Fatalf("chunk at %d: %v", off, err)
		}
		if end < len(data) {
			if _, err := os.Stat(target); !os.IsNotExist(err) {
				t.Fatalf("target visible before the last chunk: %v", err)
			}
		}
	}
	got, err := os.ReadFile(target)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content %q, %v", got, err)
	}
	st, _ := os.Stat(target)
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(cfg.ContainersDir)
	if len(ents) != 1 {
		t.Errorf("temp files left: %v", ents)
	}

	// A directory and a symlink, by their mode bits.
	dir := filepath.Join(cfg.SandboxDir, "d1")
	if _, err := a.CopyFile(ctx, &agentpb.CopyFileRequest{Path: dir, FileMode: unix.S_IFDIR | 0o711, Uid: int32(uid), Gid: int32(gid)}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() || st.Mode().Perm() != 0o711 {
		t.Errorf("dir: %v %v", st, err)
	}
	link := filepath.Join(cfg.SandboxDir, "d1/link")
	if _, err := a.CopyFile(ctx, &agentpb.CopyFileRequest{Path: link, FileMode: unix.S_IFLNK | 0o777, Data: []byte("../x"), FileSize: 4}); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(link); err != nil || l != "../x" {
		t.Errorf("symlink: %q %v", l, err)
	}
}

func TestCopyFileHostilePaths(t *testing.T) {
	a, cfg := newGuestAgent(t)
	outside := t.TempDir()
	if err := os.MkdirAll(cfg.ContainersDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(cfg.ContainersDir, "escape")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		"../../etc/passwd",
		filepath.Join(cfg.ContainersDir, "../../../../../../etc/passwd"),
		"/etc/passwd",
		filepath.Join(cfg.ContainersDir, "escape/passwd"),
		cfg.ContainersDir,
		"",
	} {
		_, err := a.CopyFile(context.Background(), &agentpb.CopyFileRequest{
			Path: p, FileSize: 4, FileMode: unix.S_IFREG | 0o644, Data: []byte("evil"),
		})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("CopyFile(%q) = %v, want InvalidArgument", p, err)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("written outside the shared dirs: %v", ents)
	}
	_, err := a.CopyFile(context.Background(), &agentpb.CopyFileRequest{
		Path: filepath.Join(cfg.ContainersDir, "f"), FileSize: 2, Offset: 1, Data: []byte("xyz"),
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("chunk past file size: %v", err)
	}
}

func TestGetMetrics(t *testing.T) {
	a, _ := newGuestAgent(t)
	m, err := a.GetMetrics(context.Background(), &agentpb.GetMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(m.GetMetrics()))
	if err != nil {
		t.Fatalf("not Prometheus text: %v", err)
	}
	for _, name := range []string{
		"kata_agent_process_resident_memory_bytes", "kata_agent_process_open_fds", "go_goroutines",
		"kata_guest_meminfo", "kata_guest_load", "kata_guest_cpu_time", "kata_guest_netdev_stat",
	} {
		f, ok := fams[name]
		if !ok || len(f.GetMetric()) == 0 {
			t.Errorf("metric %s missing", name)
		}
	}
	if _, err := os.Stat("/proc/diskstats"); err == nil {
		if _, ok := fams["kata_guest_diskstat"]; !ok {
			t.Error("kata_guest_diskstat missing")
		}
	}
	var memTotal float64
	for _, mt := range fams["kata_guest_meminfo"].GetMetric() {
		for _, l := range mt.GetLabel() {
			if l.GetValue() == "MemTotal" {
				memTotal = mt.GetGauge().GetValue()
			}
		}
	}
	if memTotal < 1<<20 {
		t.Errorf("MemTotal = %v bytes", memTotal)
	}
	if rss := fams["kata_agent_process_resident_memory_bytes"].GetMetric()[0].GetGauge().GetValue(); rss <= 0 {
		t.Errorf("RSS = %v", rss)
	}
}

func TestGetVolumeStats(t *testing.T) {
	a, cfg := newGuestAgent(t)
	r, err := a.GetVolumeStats(context.Background(), &agentpb.VolumeStatsRequest{VolumeGuestPath: cfg.RunDir})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetUsage()) != 2 || r.GetUsage()[0].GetUnit() != agentpb.VolumeUsage_BYTES || r.GetUsage()[0].GetTotal() == 0 ||
		r.GetUsage()[1].GetUnit() != agentpb.VolumeUsage_INODES {
		t.Errorf("usage %v", r.GetUsage())
	}
	_, err = a.GetVolumeStats(context.Background(), &agentpb.VolumeStatsRequest{VolumeGuestPath: filepath.Join(cfg.RunDir, "nope")})
	if status.Code(err) != codes.NotFound {
		t.Errorf("missing volume: %v", err)
	}
}

func TestStorageRPCs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a tmpfs")
	}
	a, cfg := newGuestAgent(t)
	ctx := context.Background()
	mp := filepath.Join(cfg.RunDir, "sandbox/ephemeral/scratch")
	eph := []*agentpb.Storage{{Driver: "ephemeral", Source: "tmpfs", Fstype: "tmpfs", MountPoint: mp, Options: []string{"size=1m"}}}
	rb, err := a.setupStorages(ctx, "c1", eph)
	if err != nil {
		t.Fatal(err)
	}
	defer rb()
	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("not a tmpfs: %v", err)
	}
	eph[0].Options = []string{"size=4m"}
	if _, err := a.UpdateEphemeralMounts(ctx, &agentpb.UpdateEphemeralMountsRequest{Storages: eph}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Statfs(mp, &st); err != nil || st.Blocks*uint64(st.Bsize) != 4<<20 {
		t.Errorf("resize: %d bytes, %v", st.Blocks*uint64(st.Bsize), err)
	}
	if err := a.releaseStorages("c1"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Statfs(mp, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		t.Error("still mounted after release")
	}
	_, err = a.setupStorages(ctx, "c2", []*agentpb.Storage{{Driver: "ephemeral", MountPoint: cfg.RunDir + "/../../etc"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("escaping mount point: %v", err)
	}
	_, err = a.setupStorages(ctx, "c2", []*agentpb.Storage{{Driver: "nope", MountPoint: mp}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown driver: %v", err)
	}
}

func TestSwapHeader(t *testing.T) {
	mkswap, err := exec.LookPath("mkswap")
	if err != nil {
		t.Skip("mkswap not installed: nothing to compare the header with")
	}
	dir := t.TempDir()
	ours, theirs := filepath.Join(dir, "ours"), filepath.Join(dir, "theirs")
	for _, p := range []string{ours, theirs} {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeSwapHeader(ours); err != nil {
		t.Fatal(err)
	}
	if out, err := hostCombined(mkswap, theirs); err != nil {
		t.Fatalf("mkswap: %v %s", err, out)
	}
	a, _ := os.ReadFile(ours)
	b, _ := os.ReadFile(theirs)
	page := os.Getpagesize()
	// version, last_page and nr_badpages, and the signature, must match;
	// the UUID differs.
	if !bytes.Equal(a[1024:1036], b[1024:1036]) {
		t.Errorf("header fields %x, mkswap wrote %x", a[1024:1036], b[1024:1036])
	}
	if !bytes.Equal(a[page-10:page], b[page-10:page]) {
		t.Errorf("signature %q, mkswap wrote %q", a[page-10:page], b[page-10:page])
	}
	if out, err := hostOutput("blkid", "-o", "value", "-s", "TYPE", ours); err == nil && strings.TrimSpace(string(out)) != "swap" {
		t.Errorf("blkid sees %q", out)
	}
}

func TestReseed(t *testing.T) {
	if err := reseed(filepath.Join(t.TempDir(), "none"), []byte("x")); err == nil {
		t.Error("missing device accepted")
	}
	f := filepath.Join(t.TempDir(), "notrng")
	os.WriteFile(f, nil, 0o600)
	if err := reseed(f, []byte("seed")); err == nil {
		t.Error("ioctls on a regular file succeeded")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: RNDADDTOENTCNT needs CAP_SYS_ADMIN")
	}
	if err := reseed("/dev/random", bytes.Repeat([]byte{0x5a}, 64)); err != nil {
		t.Errorf("reseed /dev/random: %v", err)
	}
}

func TestOnlineCPUMemSysfs(t *testing.T) {
	run := t.TempDir()
	sys := filepath.Join(run, "sys")
	cg := filepath.Join(run, "cgroup")
	write := func(p, v string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cpu := filepath.Join(sys, "devices/system/cpu")
	write(filepath.Join(cpu, "online"), "0-1\n")
	write(filepath.Join(cpu, "cpu1/online"), "1\n")
	write(filepath.Join(cpu, "cpu2/online"), "0\n")
	write(filepath.Join(cpu, "cpu3/online"), "0\n")
	write(filepath.Join(sys, "devices/system/memory/memory7/online"), "0\n")
	// v1 cpuset: the agent's parent, one container that inherited all
	// CPUs and one pinned to cpu0.
	set := filepath.Join(cg, "cpuset", agentCgroupParent)
	write(filepath.Join(set, "cpuset.cpus"), "0-1\n")
	write(filepath.Join(set, "c1/cpuset.cpus"), "0-1\n")
	write(filepath.Join(set, "c2/cpuset.cpus"), "0\n")

	a := &Agent{}
	a.ConfigureGuest(GuestConfig{SysfsRoot: sys, CgroupRoot: cg, StorageRoot: run, HotplugTimeout: 100 * 1e6})
	g := a.guestServices()
	if _, err := a.OnlineCPUMem(context.Background(), &agentpb.OnlineCPUMemRequest{Wait: true, NbCpus: 2}); err != nil {
		t.Fatal(err)
	}
	// This fake sysfs does not update cpu/online as the kernel would, so
	// the cpuset fix is driven with the before and after sets.
	if err := g.fixCpusets("0-1", "0-3"); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		filepath.Join(cpu, "cpu2/online"):                          "1",
		filepath.Join(cpu, "cpu3/online"):                          "1",
		filepath.Join(sys, "devices/system/memory/memory7/online"): "1",
		filepath.Join(set, "cpuset.cpus"):                          "0-3",
		filepath.Join(set, "c1/cpuset.cpus"):                       "0-3",
		filepath.Join(set, "c2/cpuset.cpus"):                       "0",
	} {
		b, _ := os.ReadFile(p)
		if strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q, want %q", p, b, want)
		}
	}
	// Waiting for more CPUs than appear times out.
	_, err := a.OnlineCPUMem(context.Background(), &agentpb.OnlineCPUMemRequest{Wait: true, NbCpus: 5})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("too many CPUs: %v", err)
	}
}

// TestSetGuestDateTimeRefused checks the codes of refused times; none of
// the cases can change this machine's clock (the kernel refuses a time
// before boot).
func TestSetGuestDateTimeRefused(t *testing.T) {
	a, _ := newGuestAgent(t)
	for _, tc := range []struct {
		name string
		req  *agentpb.SetGuestDateTimeRequest
		want []codes.Code
	}{
		{"usec out of range", &agentpb.SetGuestDateTimeRequest{Sec: 1, Usec: 1e6}, []codes.Code{codes.InvalidArgument}},
		{"negative usec", &agentpb.SetGuestDateTimeRequest{Sec: 1, Usec: -1}, []codes.Code{codes.InvalidArgument}},
		// EINVAL with CAP_SYS_TIME, EPERM without.
		{"before boot", &agentpb.SetGuestDateTimeRequest{}, []codes.Code{codes.InvalidArgument, codes.PermissionDenied}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.SetGuestDateTime(context.Background(), tc.req)
			if !slices.Contains(tc.want, status.Code(err)) {
				t.Errorf("%v, want one of %v", err, tc.want)
			}
		})
	}
}
