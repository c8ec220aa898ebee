package channel

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Kind is the transport of an Addr.
type Kind string

// Transports the agent can listen on.
const (
	KindVsock  Kind = "vsock"
	KindUnix   Kind = "unix"
	KindSerial Kind = "serial"
)

// CIDAny is the vsock context id that accepts connections on any local CID
// (written -1 in addresses, as Kata does).
const CIDAny uint32 = unix.VMADDR_CID_ANY

// DefaultVsockPort is the port the Kata agent serves on.
const DefaultVsockPort uint32 = 1024

// DefaultAddr is the Kata agent's default listen address.
const DefaultAddr = "vsock://-1:1024"

// Addr is a parsed listen address.
type Addr struct {
	Kind Kind
	// CID and Port for vsock.
	CID  uint32
	Port uint32
	// Path for unix (a leading '@' means an abstract socket) and for
	// serial (the port's device node, e.g. /dev/vport0p1).
	Path string
}

func (a Addr) String() string {
	switch a.Kind {
	case KindVsock:
		cid := strconv.FormatUint(uint64(a.CID), 10)
		if a.CID == CIDAny {
			cid = "-1"
		}
		return fmt.Sprintf("vsock://%s:%d", cid, a.Port)
	case KindUnix:
		return "unix://" + a.Path
	case KindSerial:
		return "serial://" + a.Path
	}
	return string(a.Kind) + "://?"
}

// ParseAddr parses a listen address:
//
//	vsock://CID:PORT      CID -1 (or "any") listens on every local CID
//	unix:///path          a socket file
//	unix://@name          an abstract socket
//	serial:///dev/vportNpM  a virtio-serial port device, wrapped in yamux
func ParseAddr(s string) (Addr, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Addr{}, fmt.Errorf("address %q: missing scheme (want vsock://, unix:// or serial://)", s)
	}
	switch Kind(scheme) {
	case KindVsock:
		cidStr, portStr, ok := strings.Cut(rest, ":")
		if !ok || cidStr == "" || portStr == "" {
			return Addr{}, fmt.Errorf("address %q: want vsock://CID:PORT", s)
		}
		var cid uint32
		switch cidStr {
		case "-1", "any":
			cid = CIDAny
		default:
			v, err := strconv.ParseUint(cidStr, 10, 32)
			if err != nil {
				return Addr{}, fmt.Errorf("address %q: bad CID %q", s, cidStr)
			}
			cid = uint32(v)
		}
		port, err := strconv.ParseUint(portStr, 10, 32)
		if err != nil || port == 0 || uint32(port) == unix.VMADDR_PORT_ANY {
			return Addr{}, fmt.Errorf("address %q: bad port %q", s, portStr)
		}
		return Addr{Kind: KindVsock, CID: cid, Port: uint32(port)}, nil
	case KindUnix:
		switch {
		case strings.HasPrefix(rest, "@") && len(rest) > 1:
		case strings.HasPrefix(rest, "/") && len(rest) > 1:
		default:
			return Addr{}, fmt.Errorf("address %q: want unix:///absolute/path or unix://@abstract", s)
		}
		return Addr{Kind: KindUnix, Path: rest}, nil
	case KindSerial:
		if !strings.HasPrefix(rest, "/") || len(rest) == 1 {
			return Addr{}, fmt.Errorf("address %q: want serial:///dev/vportNpM", s)
		}
		return Addr{Kind: KindSerial, Path: rest}, nil
	}
	return Addr{}, fmt.Errorf("address %q: unknown scheme %q (want vsock, unix or serial)", s, scheme)
}
