package container

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
)

// TestNotifyOOMHoldsNoThread watches many memory cgroups at once: the
// watchers must wait in the runtime's poller, not each in a blocking read
// on its own OS thread, and must end when their cgroup goes away.
func TestNotifyOOMHoldsNoThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates memory cgroups")
	}
	v2 := cgroups.IsCgroup2UnifiedMode()
	root := "/sys/fs/cgroup/memory"
	if v2 {
		root = "/sys/fs/cgroup"
	}
	if _, err := os.Stat(filepath.Join(root, "memory.oom_control")); !v2 && err != nil {
		t.Skipf("no cgroup v1 memory controller at %s: %v", root, err)
	}
	const n = 16
	var dirs []string
	var chans []<-chan struct{}
	threads := pprof.Lookup("threadcreate")
	before := threads.Count()
	for i := 0; i < n; i++ {
		dir := filepath.Join(root, fmt.Sprintf("kguest-oomtest-%d-%d", os.Getpid(), i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
		t.Cleanup(func() { _ = os.Remove(dir) })
		ch, err := notifyOOM(dir, v2)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	time.Sleep(200 * time.Millisecond) // let every watcher reach its read
	if grew := threads.Count() - before; grew >= n/2 {
		t.Errorf("%d OS threads created for %d watchers: they block in read(2)", grew, n)
	}
	if v2 {
		// A v2 watch ends when its cgroup has been populated and is
		// empty again, which an empty test cgroup never was.
		return
	}
	for _, d := range dirs {
		if err := os.Remove(d); err != nil {
			t.Fatal(err)
		}
	}
	for i, ch := range chans {
		select {
		case _, ok := <-ch:
			if ok {
				t.Fatalf("watcher %d: event on cgroup removal, want the channel closed", i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("watcher %d still running after its cgroup was removed", i)
		}
	}
}
