package device

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Driver names of the Device message types (and Storage drivers) that this
// package can resolve, as the Kata runtime spells them.
const (
	DriverBlk     = "blk"
	DriverVirtBlk = "virtio-blk"
	DriverBlkCCW  = "blk-ccw"
	DriverMMIOBlk = "mmioblk"
	DriverSCSI    = "scsi"
	DriverNVDIMM  = "nvdimm"
	DriverPmem    = "pmem"
)

// Handlers lists the device types Resolve accepts, for AgentDetails.
func Handlers() []string {
	return []string{DriverBlk, DriverBlkCCW, DriverMMIOBlk, DriverNVDIMM, DriverPmem, DriverSCSI, DriverVirtBlk}
}

// DefaultTimeout bounds a wait for a hot-plugged device when no
// agent.hotplug_timeout is configured (Kata's default).
const DefaultTimeout = 3 * time.Second

// ErrTimeout is returned when a device did not show up within the timeout.
var ErrTimeout = errors.New("timed out waiting for device")

// Manager finds guest devices in sysfs and, when they are not there yet,
// waits for their uevent.
type Manager struct {
	// SysfsRoot and DevRoot default to /sys and /dev.
	SysfsRoot string
	DevRoot   string
	// Timeout bounds each wait (agent.hotplug_timeout).
	Timeout time.Duration

	watcher *Watcher
}

// NewManager returns a manager whose waits use w (which may be nil when the
// uevent socket is unavailable: only devices already present are found then).
func NewManager(w *Watcher, timeout time.Duration) *Manager {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Manager{SysfsRoot: "/sys", DevRoot: "/dev", Timeout: timeout, watcher: w}
}

func (m *Manager) sys(p ...string) string {
	root := m.SysfsRoot
	if root == "" {
		root = "/sys"
	}
	return filepath.Join(append([]string{root}, p...)...)
}

func (m *Manager) dev(name string) string {
	root := m.DevRoot
	if root == "" {
		root = "/dev"
	}
	return filepath.Join(root, name)
}

// lookup runs find against sysfs after registering match with the watcher,
// then waits for the uevent if the device is not there yet. before runs
// between the two (a bus rescan, say).
func (m *Manager) lookup(ctx context.Context, what string, findSysfs func() (string, bool), match Matcher, before func()) (string, error) {
	// A disk shows in sysfs before it can be opened: the kernel announces
	// it (the uevent) only once its block device is live and its
	// partitions are scanned. Until then open gives ENXIO, and the event
	// is still to come.
	find := func() (string, bool) {
		name, ok := findSysfs()
		if !ok || !m.live(name) {
			return "", false
		}
		return name, true
	}
	var wt *Wait
	if m.watcher != nil {
		var err error
		if wt, err = m.watcher.Watch(match); err != nil {
			wt = nil
		} else {
			defer wt.Cancel()
		}
	}
	if name, ok := find(); ok {
		return m.dev(name), nil
	}
	if before != nil {
		before()
		if name, ok := find(); ok {
			return m.dev(name), nil
		}
	}
	if wt == nil {
		return "", fmt.Errorf("%s: not present and no uevent watcher to wait with", what)
	}
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u, err := wt.Wait(wctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// The event may have been dropped (ENOBUFS): look once more.
			if name, ok := find(); ok {
				return m.dev(name), nil
			}
			return "", fmt.Errorf("%s: %w after %s", what, ErrTimeout, timeout)
		}
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return m.dev(u.DevName), nil
}

// live reports whether the block device name can be opened; only ENXIO
// (not live yet) says no.
func (m *Manager) live(name string) bool {
	fd, err := unix.Open(m.dev(name), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return !errors.Is(err, unix.ENXIO)
	}
	unix.Close(fd)
	return true
}

// PCIPath is a guest PCI path as Kata passes it: slots from the root bus
// down through bridges, e.g. "02/00".
type PCIPath []string

// ParsePCIPath validates "SS[.F]/SS[.F]/..." (hex slot, optional function).
func ParsePCIPath(s string) (PCIPath, error) {
	if s == "" {
		return nil, errors.New("empty PCI path")
	}
	var p PCIPath
	for _, c := range strings.Split(s, "/") {
		slot, fn, hasFn := strings.Cut(c, ".")
		sv, err := strconv.ParseUint(slot, 16, 8)
		if err != nil || sv > 0x1f || len(slot) > 2 {
			return nil, fmt.Errorf("PCI path %q: bad slot %q", s, c)
		}
		fv := uint64(0)
		if hasFn {
			if fv, err = strconv.ParseUint(fn, 16, 8); err != nil || fv > 7 {
				return nil, fmt.Errorf("PCI path %q: bad function %q", s, c)
			}
		}
		p = append(p, fmt.Sprintf("%02x.%x", sv, fv))
	}
	return p, nil
}

// sysfsRel maps the PCI path to the device's directory below
// /sys/devices/pci0000:00 by reading each bridge's secondary bus number.
func (m *Manager) sysfsRel(p PCIPath) (string, error) {
	bus := "0000:00"
	rel := ""
	for i, sf := range p {
		rel += "/" + bus + ":" + sf
		if i == len(p)-1 {
			break
		}
		ents, err := os.ReadDir(m.sys("devices/pci0000:00", rel, "pci_bus"))
		if err != nil {
			return "", fmt.Errorf("bridge %s: %w", rel, err)
		}
		if len(ents) != 1 {
			return "", fmt.Errorf("bridge %s: expected one secondary bus, found %d", rel, len(ents))
		}
		bus = ents[0].Name()
	}
	return rel, nil
}

// Rescan asks the kernel to rescan the PCI bus, so a device that was
// hot-plugged without an ACPI notification shows up.
func (m *Manager) Rescan() error {
	return os.WriteFile(m.sys("bus/pci/rescan"), []byte("1"), 0o200)
}

// virtioBlockTail is compiled on first use: package-level work is paid by
// every process running the agent binary, "kata-agent init" re-execs too.
var virtioBlockTail = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^virtio[0-9]+/block/[^/]+$`)
})

// firstBlock returns the first whole-disk block device below dir.
func firstBlock(dir string) (string, bool) {
	for _, pat := range []string{"virtio*/block/*", "block/*"} {
		ms, _ := filepath.Glob(filepath.Join(dir, pat))
		sort.Strings(ms)
		if len(ms) > 0 {
			return filepath.Base(ms[0]), true
		}
	}
	return "", false
}

// VirtioBlkPCI returns the /dev node of the virtio-blk disk at PCI path pcipath.
func (m *Manager) VirtioBlkPCI(ctx context.Context, pcipath string) (string, error) {
	p, err := ParsePCIPath(pcipath)
	if err != nil {
		return "", err
	}
	find := func() (string, bool) {
		rel, err := m.sysfsRel(p)
		if err != nil {
			return "", false
		}
		return firstBlock(m.sys("devices/pci0000:00", rel))
	}
	// The bridges may be new as well, so the path is resolved per event
	// (the matcher runs on the watcher's goroutine: no shared state).
	prefix := "/devices/pci0000:00"
	match := func(u *Uevent) bool {
		if u.Action != "add" || u.Subsystem != "block" || u.DevName == "" || !strings.HasPrefix(u.DevPath, prefix+"/") {
			return false
		}
		rel, err := m.sysfsRel(p)
		if err != nil {
			return false
		}
		tail, ok := strings.CutPrefix(u.DevPath, prefix+rel+"/")
		return ok && (virtioBlockTail().MatchString(tail) || strings.Count(tail, "/") == 1 && strings.HasPrefix(tail, "block/"))
	}
	return m.lookup(ctx, "virtio-blk at PCI path "+pcipath, find, match, func() { _ = m.Rescan() })
}

// VirtioBlkCCW returns the /dev node of the virtio-blk disk on CCW device
// bus id (s390x), e.g. "0.0.0005".
func (m *Manager) VirtioBlkCCW(ctx context.Context, busid string) (string, error) {
	find := func() (string, bool) { return firstBlock(m.sys("bus/ccw/devices", busid)) }
	match := func(u *Uevent) bool {
		return u.Action == "add" && u.Subsystem == "block" && u.DevName != "" &&
			strings.Contains(u.DevPath, "/"+busid+"/") && virtioBlockTail().MatchString(afterLast(u.DevPath, "/"+busid+"/"))
	}
	return m.lookup(ctx, "virtio-blk on CCW "+busid, find, match, nil)
}

func afterLast(s, sep string) string {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[i+len(sep):]
	}
	return ""
}

// ByName waits for the block device /dev/NAME (virtio-mmio disks and pmem
// devices are named by the runtime).
func (m *Manager) ByName(ctx context.Context, devpath string) (string, error) {
	name := strings.TrimPrefix(filepath.Clean(devpath), "/dev/")
	if name == "" || strings.Contains(name, "..") {
		return "", fmt.Errorf("bad device path %q", devpath)
	}
	find := func() (string, bool) {
		if _, err := os.Stat(m.sys("class/block", filepath.Base(name))); err == nil {
			return name, true
		}
		return "", false
	}
	match := func(u *Uevent) bool {
		return u.Action == "add" && u.Subsystem == "block" && u.DevName == name
	}
	return m.lookup(ctx, "block device "+devpath, find, match, nil)
}

// SCSI returns the /dev node of the SCSI disk at "target:lun" (channel 0 on
// any host), scanning the hosts first so a hot-added LUN is probed.
func (m *Manager) SCSI(ctx context.Context, addr string) (string, error) {
	tgt, lun, ok := strings.Cut(addr, ":")
	if _, err := strconv.ParseUint(tgt, 10, 32); !ok || err != nil {
		return "", fmt.Errorf("bad SCSI address %q (want target:lun)", addr)
	}
	if _, err := strconv.ParseUint(lun, 10, 32); err != nil {
		return "", fmt.Errorf("bad SCSI address %q (want target:lun)", addr)
	}
	tail := regexp.MustCompile(`/[0-9]+:0:` + tgt + `:` + lun + `/block/[^/]+$`)
	find := func() (string, bool) {
		ms, _ := filepath.Glob(m.sys("bus/scsi/devices", "*:0:"+tgt+":"+lun, "block/*"))
		sort.Strings(ms)
		if len(ms) > 0 {
			return filepath.Base(ms[0]), true
		}
		return "", false
	}
	match := func(u *Uevent) bool {
		return u.Action == "add" && u.Subsystem == "block" && u.DevName != "" && tail.MatchString(u.DevPath)
	}
	scan := func() {
		hosts, _ := filepath.Glob(m.sys("class/scsi_host/host*/scan"))
		for _, h := range hosts {
			_ = os.WriteFile(h, []byte("0 "+tgt+" "+lun), 0o200)
		}
	}
	return m.lookup(ctx, "SCSI disk "+addr, find, match, scan)
}
