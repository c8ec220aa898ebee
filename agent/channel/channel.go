// Package channel provides the guest-side listeners the agent serves its API
// on: vsock, unix sockets (file or abstract), and a virtio-serial port
// carrying a yamux session, with Kata's rules for choosing among them.
package channel

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// DefaultPollTimeout is how long Listen waits for the virtio-serial port to
// show up.
const DefaultPollTimeout = 10 * time.Second

// Config selects and configures the channel.
type Config struct {
	// Addr, when set, is the address to listen on (see ParseAddr); it
	// comes from KATA_AGENT_SERVER_ADDR or agent.server_addr.
	Addr string
	// UseVsock forces vsock (true) or virtio-serial (false) when Addr is
	// empty; nil chooses automatically.
	UseVsock *bool
	// SerialName is the virtio-serial port name (DefaultSerialName).
	SerialName string
	// SysfsRoot and DevRoot default to /sys and /dev.
	SysfsRoot, DevRoot string
	// PollTimeout bounds the wait for the serial port (DefaultPollTimeout).
	PollTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.SerialName == "" {
		c.SerialName = DefaultSerialName
	}
	if c.SysfsRoot == "" {
		c.SysfsRoot = "/sys"
	}
	if c.DevRoot == "" {
		c.DevRoot = "/dev"
	}
	if c.PollTimeout == 0 {
		c.PollTimeout = DefaultPollTimeout
	}
	return c
}

// Listen opens the agent's listener. In order: cfg.Addr if set; else
// cfg.UseVsock forces vsock or virtio-serial; else vsock when a guest vsock
// transport is present, otherwise the virtio-serial port (waiting up to
// cfg.PollTimeout for it). ctx bounds the set-up only.
func Listen(ctx context.Context, cfg Config, log *slog.Logger) (net.Listener, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	if cfg.Addr != "" {
		a, err := ParseAddr(cfg.Addr)
		if err != nil {
			return nil, err
		}
		log.Info("channel: listening on configured address", "addr", a.String())
		return ListenAddr(ctx, a, log)
	}
	vsockAddr := Addr{Kind: KindVsock, CID: CIDAny, Port: DefaultVsockPort}
	if cfg.UseVsock != nil {
		if *cfg.UseVsock {
			log.Info("channel: vsock forced by agent.use_vsock", "addr", vsockAddr.String())
			return ListenAddr(ctx, vsockAddr, log)
		}
		log.Info("channel: virtio-serial forced by agent.use_vsock=false", "port", cfg.SerialName)
		return listenSerialByName(ctx, cfg, log)
	}
	if cid, err := GuestCID(cfg.DevRoot); err == nil {
		log.Info("channel: vsock transport found", "cid", cid, "addr", vsockAddr.String())
		return ListenAddr(ctx, vsockAddr, log)
	} else {
		log.Info("channel: no vsock transport, using virtio-serial", "reason", err, "port", cfg.SerialName)
	}
	return listenSerialByName(ctx, cfg, log)
}

// ListenAddr listens on one parsed address.
func ListenAddr(ctx context.Context, a Addr, log *slog.Logger) (net.Listener, error) {
	switch a.Kind {
	case KindVsock:
		l, err := vsock.ListenContextID(a.CID, a.Port, nil)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		return l, nil
	case KindUnix:
		return listenUnix(a.Path)
	case KindSerial:
		return NewYamuxListener(DevicePort{Path: a.Path}, SerialAddr{Path: a.Path}, log), nil
	}
	return nil, fmt.Errorf("listen: unknown transport %q", a.Kind)
}

func listenSerialByName(ctx context.Context, cfg Config, log *slog.Logger) (net.Listener, error) {
	path, err := WaitSerialPort(ctx, cfg.SysfsRoot, cfg.DevRoot, cfg.SerialName, cfg.PollTimeout)
	if err != nil {
		return nil, err
	}
	log.Info("channel: serving on virtio-serial port", "port", cfg.SerialName, "path", path)
	return NewYamuxListener(DevicePort{Path: path}, SerialAddr{Path: path}, log), nil
}

// listenUnix listens on a socket file (removing a stale socket left by an
// earlier run) or, for a leading '@', on an abstract socket.
func listenUnix(path string) (net.Listener, error) {
	if path[0] != '@' {
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
			}
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("listen unix://%s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen unix://%s: %w", path, err)
	}
	if ul, ok := l.(*net.UnixListener); ok && path[0] != '@' {
		ul.SetUnlinkOnClose(true)
	}
	return l, nil
}

// ErrNoVsockTransport means the guest has no vsock transport to a host.
var ErrNoVsockTransport = errors.New("no guest-to-host vsock transport")

// GuestCID returns this guest's vsock context id when a guest-to-host vsock
// transport (virtio-vsock, vmci, hyperv) is present. A vsock socket must be
// creatable and IOCTL_VM_SOCKETS_GET_LOCAL_CID on devRoot/vsock must answer
// with a guest CID: with only the loopback transport the kernel answers 1,
// and with none VMADDR_CID_ANY, which are no use to a host.
func GuestCID(devRoot string) (uint32, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("vsock socket: %w", err)
	}
	unix.Close(fd)
	f, err := os.Open(filepath.Join(devRoot, "vsock"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cid, err := unix.IoctlGetUint32(int(f.Fd()), unix.IOCTL_VM_SOCKETS_GET_LOCAL_CID)
	if err != nil {
		return 0, fmt.Errorf("get local CID: %w", err)
	}
	switch cid {
	case unix.VMADDR_CID_ANY, unix.VMADDR_CID_LOCAL, unix.VMADDR_CID_HOST, unix.VMADDR_CID_HYPERVISOR:
		return cid, fmt.Errorf("%w (local CID %d)", ErrNoVsockTransport, int32(cid))
	}
	return cid, nil
}
