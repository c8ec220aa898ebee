package pid1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CgroupRoot is where the cgroup hierarchies are mounted.
const CgroupRoot = "/sys/fs/cgroup"

// Controller is one line of /proc/cgroups.
type Controller struct {
	Name      string
	Hierarchy int // 0: not attached to a v1 hierarchy yet
	Enabled   bool
}

// ParseProcCgroups parses /proc/cgroups.
func ParseProcCgroups(r io.Reader) ([]Controller, error) {
	var out []Controller
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			return nil, fmt.Errorf("/proc/cgroups: malformed line %q", line)
		}
		h, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, fmt.Errorf("/proc/cgroups: bad hierarchy in %q", line)
		}
		out = append(out, Controller{Name: f[0], Hierarchy: h, Enabled: f[3] == "1"})
	}
	return out, s.Err()
}

// comounted lists the controllers systemd mounts together, so that the
// layout matches what runc and container tools expect.
var comounted = [][]string{{"cpu", "cpuacct"}, {"net_cls", "net_prio"}}

// CgroupV1Mounts returns the tmpfs at CgroupRoot, one cgroup mount per
// hierarchy of enabled controllers, and the links that name each member of
// a combined hierarchy (cpu -> cpu,cpuacct). Controllers already attached
// to a hierarchy keep its grouping (mounting them differently would fail
// with EBUSY); free ones are grouped like systemd does.
func CgroupV1Mounts(ctrls []Controller) ([]Mount, []Symlink) {
	enabled := map[string]Controller{}
	var order []string
	for _, c := range ctrls {
		if c.Enabled {
			enabled[c.Name] = c
			order = append(order, c.Name)
		}
	}
	var groups [][]string
	done := map[string]bool{}
	byHier := map[int]int{} // hierarchy id -> index in groups
	for _, name := range order {
		if done[name] {
			continue
		}
		c := enabled[name]
		if c.Hierarchy != 0 {
			if i, ok := byHier[c.Hierarchy]; ok {
				groups[i] = append(groups[i], name)
			} else {
				byHier[c.Hierarchy] = len(groups)
				groups = append(groups, []string{name})
			}
			done[name] = true
			continue
		}
		group := []string{name}
		for _, co := range comounted {
			if co[0] != name && co[1] != name {
				continue
			}
			other := co[0]
			if other == name {
				other = co[1]
			}
			if oc, ok := enabled[other]; ok && oc.Hierarchy == 0 && !done[other] {
				group = []string{co[0], co[1]}
			}
		}
		for _, g := range group {
			done[g] = true
		}
		groups = append(groups, group)
	}

	mounts := []Mount{{Source: "cgroup_root", Target: CgroupRoot, FSType: "tmpfs", Flags: nosuid | nodev | noexec, Data: "mode=0755", Mode: 0o755}}
	var links []Symlink
	for _, g := range groups {
		dir := strings.Join(g, ",")
		mounts = append(mounts, Mount{
			Source: "cgroup", Target: filepath.Join(CgroupRoot, dir), FSType: "cgroup",
			Flags: nosuid | nodev | noexec, Data: dir, Mode: 0o555,
		})
		if len(g) > 1 {
			for _, name := range g {
				links = append(links, Symlink{Path: filepath.Join(CgroupRoot, name), Target: dir})
			}
		}
	}
	return mounts, links
}

// CgroupV2Mount is the unified hierarchy.
func CgroupV2Mount() Mount {
	return Mount{Source: "cgroup2", Target: CgroupRoot, FSType: "cgroup2", Flags: nosuid | nodev | noexec, Mode: 0o555}
}

// enableControllers enables every controller of the v2 root in its
// subtree_control, one by one so that one refusal does not stop the others.
func enableControllers(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range strings.Fields(string(b)) {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0); err != nil {
			errs = append(errs, fmt.Errorf("enable cgroup controller %s: %w", c, err))
		}
	}
	return errors.Join(errs...)
}
