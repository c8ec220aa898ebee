package pid1

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const sampleMountinfo = `22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
24 1 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4011028k,nr_inodes=1002757,mode=755
25 24 0:23 / /dev/pts rw,nosuid,noexec,relatime shared:3 - devpts devpts rw,gid=5,mode=620,ptmxmode=000
30 23 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
40 1 0:40 / /srv/with\040space rw,relatime - tmpfs tmpfs rw
`

func TestParseMountTable(t *testing.T) {
	tab, err := ParseMountTable(strings.NewReader(sampleMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/proc", "/sys", "/dev", "/dev/pts", "/sys/fs/cgroup", "/srv/with space", "/dev/pts/"} {
		if !tab.Mounted(p) {
			t.Errorf("%s not seen as mounted", p)
		}
	}
	for _, p := range []string{"/run", "/dev/shm", "/", "/srv"} {
		if tab.Mounted(p) {
			t.Errorf("%s seen as mounted", p)
		}
	}
	if got := tab["/sys/fs/cgroup"].FSType; got != "cgroup2" {
		t.Errorf("fstype = %q", got)
	}
	if _, err := ParseMountTable(strings.NewReader("garbage line\n")); err == nil {
		t.Error("malformed mountinfo accepted")
	}
}

func targets(ms []Mount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Target)
	}
	return out
}

func TestPlan(t *testing.T) {
	systemd, _ := ParseMountTable(strings.NewReader(sampleMountinfo))
	inTmp, _ := ParseMountTable(strings.NewReader("22 1 0:21 / /tmp/r/proc rw - proc proc rw\n23 1 0:22 / /proc rw - proc proc rw\n"))
	tests := []struct {
		name        string
		root        string
		table       MountTable
		wantTodo    []string
		wantSkipped []string
	}{
		{
			name:     "fresh initramfs",
			root:     "/",
			table:    MountTable{},
			wantTodo: []string{"/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run"},
		},
		{
			name:        "under systemd",
			root:        "/",
			table:       systemd,
			wantTodo:    []string{"/dev/shm", "/run"},
			wantSkipped: []string{"/proc", "/sys", "/dev", "/dev/pts"},
		},
		{
			name:        "root prefix",
			root:        "/tmp/r",
			table:       inTmp,
			wantTodo:    []string{"/sys", "/dev", "/dev/pts", "/dev/shm", "/run"},
			wantSkipped: []string{"/proc"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			todo, skipped := Plan(tt.root, BaseMounts(), tt.table)
			if got := targets(todo); !reflect.DeepEqual(got, tt.wantTodo) {
				t.Errorf("todo = %v, want %v", got, tt.wantTodo)
			}
			if got := targets(skipped); !reflect.DeepEqual(got, tt.wantSkipped) {
				t.Errorf("skipped = %v, want %v", got, tt.wantSkipped)
			}
		})
	}
}

func TestDevptsOptions(t *testing.T) {
	for _, m := range BaseMounts() {
		if m.FSType == "devpts" {
			for _, o := range []string{"newinstance", "ptmxmode=0666", "mode=0620"} {
				if !strings.Contains(m.Data, o) {
					t.Errorf("devpts options %q lack %s", m.Data, o)
				}
			}
			return
		}
	}
	t.Fatal("no devpts mount")
}

const freshCgroups = `#subsys_name	hierarchy	num_cgroups	enabled
cpuset	0	1	1
cpu	0	1	1
cpuacct	0	1	1
blkio	0	1	1
memory	0	1	1
devices	0	1	1
freezer	0	1	1
net_cls	0	1	1
perf_event	0	1	1
net_prio	0	1	1
hugetlb	0	1	0
pids	0	1	1
`

// As on a host where systemd mounted cpu and cpuacct apart.
const boundCgroups = `#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	3	1
cpu	1	3	1
cpuacct	2	3	1
memory	4	40	1
net_cls	0	3	1
net_prio	0	3	1
pids	8	3	1
rdma	9	1	1
misc	9	1	1
`

func TestCgroupV1Mounts(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantDirs  []string
		wantLinks map[string]string
	}{
		{
			name:      "fresh",
			in:        freshCgroups,
			wantDirs:  []string{"cpuset", "cpu,cpuacct", "blkio", "memory", "devices", "freezer", "net_cls,net_prio", "perf_event", "pids"},
			wantLinks: map[string]string{"cpu": "cpu,cpuacct", "cpuacct": "cpu,cpuacct", "net_cls": "net_cls,net_prio", "net_prio": "net_cls,net_prio"},
		},
		{
			name:      "already bound hierarchies keep their grouping",
			in:        boundCgroups,
			wantDirs:  []string{"cpuset", "cpu", "cpuacct", "memory", "net_cls,net_prio", "pids", "rdma,misc"},
			wantLinks: map[string]string{"net_cls": "net_cls,net_prio", "net_prio": "net_cls,net_prio", "rdma": "rdma,misc", "misc": "rdma,misc"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctrls, err := ParseProcCgroups(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			mounts, links := CgroupV1Mounts(ctrls)
			if mounts[0].FSType != "tmpfs" || mounts[0].Target != CgroupRoot {
				t.Fatalf("first mount = %v, want the tmpfs at %s", mounts[0], CgroupRoot)
			}
			var dirs []string
			for _, m := range mounts[1:] {
				if m.FSType != "cgroup" || m.Data != filepath.Base(m.Target) {
					t.Errorf("bad controller mount %v", m)
				}
				dirs = append(dirs, filepath.Base(m.Target))
			}
			if !reflect.DeepEqual(dirs, tt.wantDirs) {
				t.Errorf("hierarchies = %v, want %v", dirs, tt.wantDirs)
			}
			gotLinks := map[string]string{}
			for _, l := range links {
				gotLinks[filepath.Base(l.Path)] = l.Target
			}
			if !reflect.DeepEqual(gotLinks, tt.wantLinks) {
				t.Errorf("links = %v, want %v", gotLinks, tt.wantLinks)
			}
		})
	}
	if _, err := ParseProcCgroups(strings.NewReader("cpu 1 2\n")); err == nil {
		t.Error("malformed /proc/cgroups accepted")
	}
}

func TestMakeSymlink(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	os.WriteFile(filepath.Join(root, "dev/ptmx"), nil, 0o644)  // stands in for the node
	os.WriteFile(filepath.Join(root, "dev/stdin"), nil, 0o644) // not ours to replace
	os.Symlink("/elsewhere", filepath.Join(root, "dev/fd"))    // an existing link stays
	for _, s := range DevSymlinks() {
		if err := makeSymlink(root, s); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{"ptmx": "pts/ptmx", "fd": "/elsewhere", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "core": "/proc/kcore"}
	for name, target := range want {
		if got, err := os.Readlink(filepath.Join(root, "dev", name)); err != nil || got != target {
			t.Errorf("/dev/%s -> %q (%v), want %q", name, got, err, target)
		}
	}
	if fi, err := os.Lstat(filepath.Join(root, "dev/stdin")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("/dev/stdin replaced: %v", err)
	}
}
