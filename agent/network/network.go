// Package network configures the guest's interfaces, routes and neighbours
// over netlink, with the Kata agent API's types.
package network

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/kguest/kguest/protocols/typespb"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrInvalid marks malformed requests; ErrNotFound a link that is not there.
var (
	ErrInvalid  = errors.New("invalid network request")
	ErrNotFound = errors.New("link not found")
)

// Manager issues netlink requests through one handle (bound to a network
// namespace in tests, the agent's own in the guest).
type Manager struct {
	h *netlink.Handle
}

// New returns a manager using h; a nil h means the caller's namespace.
func New(h *netlink.Handle) *Manager {
	if h == nil {
		h = &netlink.Handle{}
	}
	return &Manager{h: h}
}

func (m *Manager) findLink(hwaddr, name string) (netlink.Link, error) {
	if hwaddr != "" {
		want, err := net.ParseMAC(hwaddr)
		if err != nil {
			return nil, fmt.Errorf("%w: hardware address %q: %v", ErrInvalid, hwaddr, err)
		}
		links, err := m.h.LinkList()
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			if a := l.Attrs().HardwareAddr; len(a) > 0 && a.String() == want.String() {
				return l, nil
			}
		}
		if name == "" {
			return nil, fmt.Errorf("%w: no link with address %s", ErrNotFound, hwaddr)
		}
	}
	if name == "" {
		return nil, fmt.Errorf("%w: interface has neither hwAddr nor device name", ErrInvalid)
	}
	l, err := m.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	return l, nil
}

// parseAddr turns an IPAddress (mask as prefix length or dotted quad) into
// a netlink address.
func parseAddr(a *typespb.IPAddress) (*netlink.Addr, error) {
	ip := net.ParseIP(a.GetAddress())
	if ip == nil {
		return nil, fmt.Errorf("%w: IP address %q", ErrInvalid, a.GetAddress())
	}
	bits := 128
	if ip4 := ip.To4(); ip4 != nil {
		ip, bits = ip4, 32
	}
	mask := a.GetMask()
	var ones int
	switch {
	case mask == "":
		ones = bits
	case strings.Contains(mask, "."):
		mip := net.ParseIP(mask).To4()
		if mip == nil {
			return nil, fmt.Errorf("%w: mask %q", ErrInvalid, mask)
		}
		var b int
		if ones, b = net.IPMask(mip).Size(); b == 0 {
			return nil, fmt.Errorf("%w: non-contiguous mask %q", ErrInvalid, mask)
		}
	default:
		n, err := strconv.Atoi(mask)
		if err != nil || n < 0 || n > bits {
			return nil, fmt.Errorf("%w: mask %q", ErrInvalid, mask)
		}
		ones = n
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(ones, bits)}}, nil
}

// UpdateInterface finds the link by MAC (falling back to the device name),
// replaces its addresses, and sets its name, MTU, ARP flag and state up.
func (m *Manager) UpdateInterface(iface *typespb.Interface) (*typespb.Interface, error) {
	if iface == nil {
		return nil, fmt.Errorf("%w: no interface", ErrInvalid)
	}
	addrs := make([]*netlink.Addr, 0, len(iface.GetIPAddresses()))
	for _, a := range iface.GetIPAddresses() {
		na, err := parseAddr(a)
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, na)
	}
	link, err := m.findLink(iface.GetHwAddr(), iface.GetDevice())
	if err != nil {
		return nil, err
	}
	// Renaming needs the link down.
	if err := m.h.LinkSetDown(link); err != nil {
		return nil, fmt.Errorf("set %s down: %w", link.Attrs().Name, err)
	}
	old, err := m.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	for i := range old {
		if old[i].IP.IsLinkLocalUnicast() && old[i].IP.To4() == nil {
			continue // the kernel's own fe80:: address
		}
		if err := m.h.AddrDel(link, &old[i]); err != nil {
			return nil, fmt.Errorf("delete address %s: %w", old[i].IPNet, err)
		}
	}
	for _, a := range addrs {
		if err := m.h.AddrReplace(link, a); err != nil {
			return nil, fmt.Errorf("add address %s to %s: %w", a.IPNet, link.Attrs().Name, err)
		}
	}
	if n := iface.GetName(); n != "" && n != link.Attrs().Name {
		if err := m.h.LinkSetName(link, n); err != nil {
			return nil, fmt.Errorf("rename %s to %s: %w", link.Attrs().Name, n, err)
		}
	}
	if mtu := int(iface.GetMtu()); mtu > 0 && mtu != link.Attrs().MTU {
		if err := m.h.LinkSetMTU(link, mtu); err != nil {
			return nil, fmt.Errorf("set MTU of %s: %w", link.Attrs().Name, err)
		}
	}
	if iface.GetRawFlags()&unix.IFF_NOARP != 0 {
		err = m.h.LinkSetARPOff(link)
	} else {
		err = m.h.LinkSetARPOn(link)
	}
	if err != nil {
		return nil, fmt.Errorf("set ARP on %s: %w", link.Attrs().Name, err)
	}
	if err := m.h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", link.Attrs().Name, err)
	}
	l, err := m.h.LinkByIndex(link.Attrs().Index)
	if err != nil {
		return nil, fmt.Errorf("re-read link: %w", err)
	}
	return m.describe(l)
}

func family(ip net.IP) typespb.IPFamily {
	if ip.To4() != nil {
		return typespb.IPFamily_v4
	}
	return typespb.IPFamily_v6
}

func (m *Manager) describe(l netlink.Link) (*typespb.Interface, error) {
	a := l.Attrs()
	out := &typespb.Interface{
		Device:   a.Name,
		Name:     a.Name,
		Mtu:      uint64(a.MTU),
		HwAddr:   a.HardwareAddr.String(),
		Type:     l.Type(),
		RawFlags: a.RawFlags,
	}
	addrs, err := m.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", a.Name, err)
	}
	for _, ad := range addrs {
		ones, _ := ad.Mask.Size()
		out.IPAddresses = append(out.IPAddresses, &typespb.IPAddress{
			Family: family(ad.IP), Address: ad.IP.String(), Mask: strconv.Itoa(ones),
		})
	}
	return out, nil
}

// ListInterfaces describes every link.
func (m *Manager) ListInterfaces() ([]*typespb.Interface, error) {
	links, err := m.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := make([]*typespb.Interface, 0, len(links))
	for _, l := range links {
		d, err := m.describe(l)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (m *Manager) linkName(index int, cache map[int]string) string {
	if n, ok := cache[index]; ok {
		return n
	}
	n := ""
	if l, err := m.h.LinkByIndex(index); err == nil {
		n = l.Attrs().Name
	}
	cache[index] = n
	return n
}

// mainRoutes lists the main table's routes of both families.
func (m *Manager) mainRoutes() ([]netlink.Route, error) {
	rs, err := m.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return rs, nil
}

// ListRoutes describes the main routing table.
func (m *Manager) ListRoutes() ([]*typespb.Route, error) {
	rs, err := m.mainRoutes()
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	out := make([]*typespb.Route, 0, len(rs))
	for _, r := range rs {
		tr := &typespb.Route{
			Device: m.linkName(r.LinkIndex, names),
			Scope:  uint32(r.Scope),
			Flags:  uint32(r.Flags),
			Family: typespb.IPFamily_v4,
		}
		if r.Family == unix.AF_INET6 {
			tr.Family = typespb.IPFamily_v6
		}
		if r.Dst != nil {
			// The default route is reported with an empty destination, as Kata does.
			if ones, _ := r.Dst.Mask.Size(); ones != 0 || !r.Dst.IP.IsUnspecified() {
				tr.Dest = r.Dst.String()
			}
		}
		if r.Gw != nil {
			tr.Gateway = r.Gw.String()
		}
		if r.Src != nil {
			tr.Source = r.Src.String()
		}
		out = append(out, tr)
	}
	return out, nil
}

func (m *Manager) toRoute(r *typespb.Route, names map[string]int) (*netlink.Route, error) {
	nr := &netlink.Route{Table: unix.RT_TABLE_MAIN, Scope: netlink.Scope(r.GetScope()), Flags: int(r.GetFlags())}
	if dev := r.GetDevice(); dev != "" {
		idx, ok := names[dev]
		if !ok {
			l, err := m.h.LinkByName(dev)
			if err != nil {
				return nil, fmt.Errorf("%w: route device %s", ErrNotFound, dev)
			}
			idx = l.Attrs().Index
			names[dev] = idx
		}
		nr.LinkIndex = idx
	}
	if d := r.GetDest(); d != "" && d != "default" {
		if !strings.Contains(d, "/") {
			if ip := net.ParseIP(d); ip != nil && ip.To4() != nil {
				d += "/32"
			} else {
				d += "/128"
			}
		}
		_, dst, err := net.ParseCIDR(d)
		if err != nil {
			return nil, fmt.Errorf("%w: route destination %q", ErrInvalid, r.GetDest())
		}
		nr.Dst = dst
	}
	if g := r.GetGateway(); g != "" {
		if nr.Gw = net.ParseIP(g); nr.Gw == nil {
			return nil, fmt.Errorf("%w: gateway %q", ErrInvalid, g)
		}
	}
	if s := r.GetSource(); s != "" {
		if nr.Src = net.ParseIP(s); nr.Src == nil {
			return nil, fmt.Errorf("%w: route source %q", ErrInvalid, s)
		}
	}
	nr.Family = unix.AF_INET
	if r.GetFamily() == typespb.IPFamily_v6 || (nr.Dst != nil && nr.Dst.IP.To4() == nil) || (nr.Gw != nil && nr.Gw.To4() == nil) {
		nr.Family = unix.AF_INET6
	}
	return nr, nil
}

// UpdateRoutes replaces the main table with routes: the routes the kernel
// derived from addresses stay, every other one goes, then link-scope routes
// are added before the ones that need them as next hops.
func (m *Manager) UpdateRoutes(routes []*typespb.Route) ([]*typespb.Route, error) {
	names := map[string]int{}
	want := make([]*netlink.Route, 0, len(routes))
	for _, r := range routes {
		nr, err := m.toRoute(r, names)
		if err != nil {
			return nil, err
		}
		want = append(want, nr)
	}
	old, err := m.mainRoutes()
	if err != nil {
		return nil, err
	}
	for i := range old {
		if old[i].Protocol == unix.RTPROT_KERNEL {
			continue
		}
		if err := m.h.RouteDel(&old[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("delete route %s: %w", old[i], err)
		}
	}
	sort.SliceStable(want, func(i, j int) bool {
		return want[i].Scope == netlink.SCOPE_LINK && want[j].Scope != netlink.SCOPE_LINK
	})
	for _, r := range want {
		if err := m.h.RouteReplace(r); err != nil {
			return nil, fmt.Errorf("add route %s: %w", r, err)
		}
	}
	return m.ListRoutes()
}

// AddARPNeighbors sets static neighbour entries.
func (m *Manager) AddARPNeighbors(neighs []*typespb.ARPNeighbor) error {
	for _, n := range neighs {
		if n.GetToIPAddress() == nil {
			return fmt.Errorf("%w: neighbour without address", ErrInvalid)
		}
		ip := net.ParseIP(n.GetToIPAddress().GetAddress())
		if ip == nil {
			return fmt.Errorf("%w: neighbour address %q", ErrInvalid, n.GetToIPAddress().GetAddress())
		}
		l, err := m.findLink("", n.GetDevice())
		if err != nil {
			return err
		}
		nb := &netlink.Neigh{LinkIndex: l.Attrs().Index, IP: ip, State: int(n.GetState()), Flags: int(n.GetFlags()), Family: unix.AF_INET}
		if ip.To4() == nil {
			nb.Family = unix.AF_INET6
		}
		if nb.State == 0 {
			nb.State = netlink.NUD_PERMANENT
		}
		if ll := n.GetLladdr(); ll != "" {
			if nb.HardwareAddr, err = net.ParseMAC(ll); err != nil {
				return fmt.Errorf("%w: lladdr %q", ErrInvalid, ll)
			}
		}
		if err := m.h.NeighSet(nb); err != nil {
			return fmt.Errorf("set neighbour %s on %s: %w", ip, n.GetDevice(), err)
		}
	}
	return nil
}
