// Package logging sets up the agent's structured logs (log/slog): text or
// JSON, on the console, or served on a vsock port (agent.log_vport).
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/kguest/kguest/init/cmdline"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// Options are Setup's seams for tests.
type Options struct {
	// Console is where logs go without a log port, written as given. By
	// default os.Stderr (as PID 1 the kernel points it at /dev/console)
	// behind a ConsoleWriter, so that a stuck console never blocks logging.
	Console io.Writer
	// ListenPort opens the log port's listener (vsock on any CID).
	ListenPort func(port uint32) (net.Listener, error)
	// BufferBytes bounds the logs kept for readers (DefaultBufferBytes).
	BufferBytes int
}

func listenVsock(port uint32) (net.Listener, error) {
	return vsock.ListenContextID(unix.VMADDR_CID_ANY, port, nil)
}

// Setup returns the agent's logger, configured by cfg, and makes it slog's
// default. When cfg.LogVport is set the logs are served on that vsock port
// instead of the console; if that port cannot be opened the logs go to the
// console and the error is returned with a working logger.
func Setup(cfg cmdline.Config) (*slog.Logger, error) {
	return SetupWith(cfg, Options{})
}

// SetupWith is Setup with explicit outputs.
func SetupWith(cfg cmdline.Config, o Options) (*slog.Logger, error) {
	if o.Console == nil {
		c := NewConsoleWriter(os.Stderr, 0)
		consoleMu.Lock()
		console = c
		consoleMu.Unlock()
		o.Console = c
	}
	if o.ListenPort == nil {
		o.ListenPort = listenVsock
	}
	var w io.Writer = o.Console
	var err error
	if cfg.LogVport != 0 {
		l, lerr := o.ListenPort(cfg.LogVport)
		if lerr != nil {
			err = fmt.Errorf("log port %d: %w", cfg.LogVport, lerr)
		} else {
			b := NewBroadcaster(o.BufferBytes)
			go b.Serve(l)
			w = b
		}
	}
	log := slog.New(NewHandler(w, cfg))
	slog.SetDefault(log)
	if err != nil {
		log.Error("logging: cannot serve logs on the log port, using the console", "error", err)
	}
	return log, err
}

// NewHandler returns the slog handler for cfg's level and format, writing
// one record per Write to w.
func NewHandler(w io.Writer, cfg cmdline.Config) slog.Handler {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel, ReplaceAttr: levelNames}
	var h slog.Handler
	if cfg.LogFormat == cmdline.LogFormatJSON {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return h.WithAttrs([]slog.Attr{slog.String("name", "kata-agent"), slog.Int("pid", os.Getpid())})
}

// levelNames names the two levels slog lacks as Kata does.
func levelNames(groups []string, a slog.Attr) slog.Attr {
	if a.Key != slog.LevelKey || len(groups) > 0 {
		return a
	}
	switch l, _ := a.Value.Any().(slog.Level); {
	case l <= cmdline.LevelTrace:
		return slog.String(slog.LevelKey, "TRACE")
	case l >= cmdline.LevelCritical:
		return slog.String(slog.LevelKey, "CRITICAL")
	}
	return a
}
