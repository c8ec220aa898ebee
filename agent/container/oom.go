package container

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
)

// watchOOM reports every OOM kill in the container's memory cgroup. The
// kernel's notification (v1 eventfd on memory.oom_control, v2 inotify on
// memory.events) only says something happened; the oom_kill counter tells a
// real kill from a mere limit hit.
func (c *Container) watchOOM(report func(id string)) error {
	st, err := c.lc.State()
	if err != nil {
		return err
	}
	v2 := cgroups.IsCgroup2UnifiedMode()
	dir := st.CgroupPaths["memory"]
	file := filepath.Join(dir, "memory.oom_control")
	if v2 {
		dir = st.CgroupPaths[""]
		file = filepath.Join(dir, "memory.events")
	}
	ch, err := notifyOOM(dir, v2)
	if err != nil {
		return err
	}
	last, _ := oomKills(file)
	go func() {
		// The channel closes when the cgroup goes away.
		for range ch {
			// The counter can trail the notification by a moment.
			var n uint64
			for i := 0; i < 20; i++ {
				if n, _ = oomKills(file); n > last {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if n <= last {
				continue
			}
			last = n
			c.log.Info("OOM kill in container", "oom_kill", n)
			report(c.id)
		}
	}()
	return nil
}

// oomKills reads the oom_kill counter from memory.oom_control (v1) or
// memory.events (v2).
func oomKills(file string) (uint64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == "oom_kill" {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, sc.Err()
}
