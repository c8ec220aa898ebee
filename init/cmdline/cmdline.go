// Package cmdline turns the kernel command line (and a few environment
// overrides) into the agent's typed start-up configuration.
//
// The keys and their defaults follow the Kata Containers agent: every key is
// named agent.<name>, booleans may be given bare ("agent.devmode"), and a
// value may be quoted ("agent.server_addr=\"unix:///a b\"").
//
//	agent.log=LEVEL                   trace, debug, info (default), warn, error, critical
//	                                  (env KATA_AGENT_LOG_LEVEL)
//	agent.log_format=FORMAT           text (default) or json (env KATA_AGENT_LOG_FORMAT)
//	agent.log_vport=PORT              serve the logs on this vsock port instead of the console
//	agent.debug_console[=BOOL]        run a shell on /dev/console
//	agent.debug_console_vport=PORT    serve a shell on this vsock port
//	agent.hotplug_timeout=SECONDS     wait for hot-plugged devices (default 3)
//	agent.container_pipe_size=BYTES   stdio pipe size of container processes (0: kernel default)
//	agent.server_addr=ADDR            vsock://CID:PORT, unix:///path, unix://@name or
//	                                  serial:///dev/vportNpM (env KATA_AGENT_SERVER_ADDR)
//	agent.use_vsock=BOOL              force vsock (true) or virtio-serial (false)
//	agent.devmode[=BOOL]              developer mode
//	agent.unified_cgroup_hierarchy[=BOOL]  cgroup v2 (also systemd.unified_cgroup_hierarchy)
//	agent.launch_process_timeout=SECONDS  (default 6)
//	agent.policy_file=PATH            Rego policy loaded at start (env KATA_AGENT_POLICY_FILE)
//
// Unknown or malformed agent.* entries are reported as warnings and leave the
// default in place.
package cmdline

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults, as in the Kata agent.
const (
	DefaultHotplugTimeout       = 3 * time.Second
	DefaultLaunchProcessTimeout = 6 * time.Second
	DefaultLogLevel             = slog.LevelInfo
)

// Log formats for Config.LogFormat.
const (
	LogFormatText = "text"
	LogFormatJSON = "json"
)

// Environment variables that override the kernel command line.
const (
	EnvServerAddr = "KATA_AGENT_SERVER_ADDR"
	EnvLogLevel   = "KATA_AGENT_LOG_LEVEL"
	EnvPolicyFile = "KATA_AGENT_POLICY_FILE"
	EnvLogFormat  = "KATA_AGENT_LOG_FORMAT"
)

// ProcCmdline is where Load reads the command line from.
const ProcCmdline = "/proc/cmdline"

// LevelTrace and LevelCritical extend slog's levels with the two extra Kata
// log levels.
const (
	LevelTrace    = slog.LevelDebug - 4
	LevelCritical = slog.LevelError + 4
)

// Config is the agent's start-up configuration.
type Config struct {
	// LogLevel is agent.log (trace, debug, info, warn, error, critical).
	LogLevel slog.Level
	// LogFormat is agent.log_format: "text" (default) or "json".
	LogFormat string
	// LogVport is agent.log_vport: when non-zero the logs are served on
	// this vsock port instead of the console.
	LogVport uint32
	// DebugConsole is agent.debug_console: run a shell on /dev/console.
	DebugConsole bool
	// DebugConsoleVport is agent.debug_console_vport: serve a shell on
	// this vsock port.
	DebugConsoleVport uint32
	// HotplugTimeout is agent.hotplug_timeout (seconds): how long to wait
	// for a hot-plugged device to appear.
	HotplugTimeout time.Duration
	// ContainerPipeSize is agent.container_pipe_size: the size of the
	// stdio pipes of container processes (0: the kernel's default).
	ContainerPipeSize uint32
	// ServerAddr is agent.server_addr (or KATA_AGENT_SERVER_ADDR): the
	// address to serve the API on; empty selects the channel
	// automatically.
	ServerAddr string
	// UseVsock is agent.use_vsock: nil lets the channel be chosen
	// automatically, otherwise it forces vsock (true) or virtio-serial
	// (false).
	UseVsock *bool
	// DevMode is agent.devmode.
	DevMode bool
	// UnifiedCgroupHierarchy is agent.unified_cgroup_hierarchy or
	// systemd.unified_cgroup_hierarchy: mount cgroup v2 instead of v1.
	UnifiedCgroupHierarchy bool
	// LaunchProcessTimeout is agent.launch_process_timeout (seconds).
	LaunchProcessTimeout time.Duration
	// PolicyFile is agent.policy_file (or KATA_AGENT_POLICY_FILE): a Rego
	// policy loaded at start.
	PolicyFile string
}

// Default returns the configuration used when the command line says nothing.
func Default() Config {
	return Config{
		LogLevel:             DefaultLogLevel,
		LogFormat:            LogFormatText,
		HotplugTimeout:       DefaultHotplugTimeout,
		LaunchProcessTimeout: DefaultLaunchProcessTimeout,
	}
}

// Warning reports a command line entry that was ignored or only partly
// understood. The configuration keeps its default for that key.
type Warning struct {
	Key   string
	Value string
	Msg   string
}

func (w Warning) String() string {
	if w.Value == "" {
		return fmt.Sprintf("%s: %s", w.Key, w.Msg)
	}
	return fmt.Sprintf("%s=%q: %s", w.Key, w.Value, w.Msg)
}

// Error lets a Warning be used where an error is expected.
func (w Warning) Error() string { return w.String() }

// param is one "key[=value]" entry of the command line.
type param struct {
	key      string
	value    string
	hasValue bool
}

type setter func(c *Config, p param) error

// handlers maps each agent.* key to the function that stores it.
var handlers = map[string]setter{
	"agent.log":                      setLogLevel,
	"agent.log_format":               setLogFormat,
	"agent.log_vport":                uint32Setter(func(c *Config) *uint32 { return &c.LogVport }),
	"agent.debug_console":            boolSetter(func(c *Config) *bool { return &c.DebugConsole }),
	"agent.debug_console_vport":      uint32Setter(func(c *Config) *uint32 { return &c.DebugConsoleVport }),
	"agent.hotplug_timeout":          secondsSetter(func(c *Config) *time.Duration { return &c.HotplugTimeout }),
	"agent.container_pipe_size":      uint32Setter(func(c *Config) *uint32 { return &c.ContainerPipeSize }),
	"agent.server_addr":              setServerAddr,
	"agent.use_vsock":                setUseVsock,
	"agent.devmode":                  boolSetter(func(c *Config) *bool { return &c.DevMode }),
	"agent.unified_cgroup_hierarchy": boolSetter(func(c *Config) *bool { return &c.UnifiedCgroupHierarchy }),
	"agent.launch_process_timeout":   secondsSetter(func(c *Config) *time.Duration { return &c.LaunchProcessTimeout }),
	"agent.policy_file":              setPolicyFile,
}

// unsupported lists Kata agent keys this agent knows of but does not
// implement; they get a warning that says so rather than "unknown".
var unsupported = map[string]bool{
	"agent.trace":                           true,
	"agent.https_proxy":                     true,
	"agent.no_proxy":                        true,
	"agent.guest_components_rest_api":       true,
	"agent.guest_components_procs":          true,
	"agent.cdh_api_timeout":                 true,
	"agent.image_registry_auth":             true,
	"agent.enable_signature_verification":   true,
	"agent.secure_image_storage_integrity":  true,
	"agent.passfd_listener_port":            true,
	"agent.mem_agent_enable":                true,
	"agent.image_policy_file":               true,
	"agent.config_file":                     true,
	"agent.cdi_timeout":                     true,
	"agent.guest_components_rest_api_debug": true,
}

// Parse reads a kernel command line. Entries that are not agent.* keys are
// ignored, except systemd.unified_cgroup_hierarchy. Unknown or malformed
// agent.* entries produce a Warning and leave the default in place.
func Parse(cmdline string) (Config, []Warning) {
	c := Default()
	var warns []Warning
	agentCgroup := false
	for _, p := range split(cmdline) {
		if p.key == "systemd.unified_cgroup_hierarchy" {
			if agentCgroup {
				continue // the agent's own key wins
			}
			v, err := parseBool(p)
			if err != nil {
				warns = append(warns, Warning{p.key, p.value, err.Error()})
				continue
			}
			c.UnifiedCgroupHierarchy = v
			continue
		}
		if !strings.HasPrefix(p.key, "agent.") {
			continue
		}
		set, ok := handlers[p.key]
		if !ok {
			msg := "unknown key, ignored"
			if unsupported[p.key] {
				msg = "not supported by this agent, ignored"
			}
			warns = append(warns, Warning{p.key, p.value, msg})
			continue
		}
		if err := set(&c, p); err != nil {
			warns = append(warns, Warning{p.key, p.value, err.Error() + ", keeping the default"})
			continue
		}
		if p.key == "agent.unified_cgroup_hierarchy" {
			agentCgroup = true
		}
	}
	return c, warns
}

// Load parses /proc/cmdline and applies the environment overrides
// (KATA_AGENT_SERVER_ADDR, KATA_AGENT_LOG_LEVEL, KATA_AGENT_LOG_FORMAT,
// KATA_AGENT_POLICY_FILE). As PID 1, /proc may not be mounted yet: Load then
// mounts it itself (later set-up finds it mounted and leaves it).
func Load() (Config, []Warning) {
	data, err := os.ReadFile(ProcCmdline)
	if errors.Is(err, fs.ErrNotExist) && os.Getpid() == 1 {
		if merr := mountProc(); merr != nil {
			err = fmt.Errorf("%w (mount /proc: %v)", err, merr)
		} else {
			data, err = os.ReadFile(ProcCmdline)
		}
	}
	var c Config
	var warns []Warning
	if err != nil {
		c = Default()
		warns = append(warns, Warning{Key: ProcCmdline, Msg: fmt.Sprintf("cannot read: %v; using defaults", err)})
	} else {
		c, warns = Parse(string(data))
	}
	return c, append(warns, ApplyEnv(&c, os.LookupEnv)...)
}

// ApplyEnv applies the environment overrides to c, reading variables with
// lookup (os.LookupEnv in production).
func ApplyEnv(c *Config, lookup func(string) (string, bool)) []Warning {
	var warns []Warning
	env := []struct {
		name string
		set  setter
	}{
		{EnvServerAddr, setServerAddr},
		{EnvLogLevel, setLogLevel},
		{EnvLogFormat, setLogFormat},
		{EnvPolicyFile, setPolicyFile},
	}
	for _, e := range env {
		v, ok := lookup(e.name)
		if !ok || v == "" {
			continue
		}
		if err := e.set(c, param{key: e.name, value: v, hasValue: true}); err != nil {
			warns = append(warns, Warning{e.name, v, err.Error() + ", ignored"})
		}
	}
	return warns
}

func mountProc() error {
	if err := os.MkdirAll("/proc", 0o555); err != nil {
		return err
	}
	return unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

// split breaks a command line into parameters the way the kernel does
// (lib/cmdline.c next_arg): whitespace separates entries except inside
// double quotes, and the quotes themselves are dropped.
func split(s string) []param {
	var out []param
	var b strings.Builder
	inQuote, started := false, false
	flush := func() {
		if !started {
			return
		}
		tok := b.String()
		b.Reset()
		started = false
		k, v, ok := strings.Cut(tok, "=")
		out = append(out, param{key: k, value: v, hasValue: ok})
	}
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			started = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == 0):
			flush()
		default:
			b.WriteRune(r)
			started = true
		}
	}
	flush()
	return out
}

func needValue(p param) (string, error) {
	if !p.hasValue || p.value == "" {
		return "", errors.New("missing value")
	}
	return p.value, nil
}

// parseBool accepts a bare key (true), and the values strconv.ParseBool
// knows (1, 0, true, false, ...), as well as yes/no and on/off.
func parseBool(p param) (bool, error) {
	if !p.hasValue {
		return true, nil
	}
	switch strings.ToLower(p.value) {
	case "yes", "on":
		return true, nil
	case "no", "off":
		return false, nil
	}
	v, err := strconv.ParseBool(p.value)
	if err != nil {
		return false, fmt.Errorf("not a boolean (want true, false, 1 or 0)")
	}
	return v, nil
}

func boolSetter(field func(*Config) *bool) setter {
	return func(c *Config, p param) error {
		v, err := parseBool(p)
		if err != nil {
			return err
		}
		*field(c) = v
		return nil
	}
}

func uint32Setter(field func(*Config) *uint32) setter {
	return func(c *Config, p param) error {
		s, err := needValue(p)
		if err != nil {
			return err
		}
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return fmt.Errorf("not an unsigned 32-bit integer")
		}
		*field(c) = uint32(v)
		return nil
	}
}

// secondsSetter parses a positive whole number of seconds, as Kata does.
func secondsSetter(field func(*Config) *time.Duration) setter {
	return func(c *Config, p param) error {
		s, err := needValue(p)
		if err != nil {
			return err
		}
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil || v == 0 {
			return fmt.Errorf("not a positive whole number of seconds")
		}
		*field(c) = time.Duration(v) * time.Second
		return nil
	}
}

// ParseLevel maps a Kata log level name to a slog level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "trace":
		return LevelTrace, nil
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	case "critical", "fatal", "panic":
		return LevelCritical, nil
	}
	return 0, fmt.Errorf("unknown log level (want trace, debug, info, warn, error or critical)")
}

func setLogLevel(c *Config, p param) error {
	s, err := needValue(p)
	if err != nil {
		return err
	}
	l, err := ParseLevel(s)
	if err != nil {
		return err
	}
	c.LogLevel = l
	return nil
}

func setLogFormat(c *Config, p param) error {
	s, err := needValue(p)
	if err != nil {
		return err
	}
	switch f := strings.ToLower(s); f {
	case LogFormatText, LogFormatJSON:
		c.LogFormat = f
		return nil
	}
	return fmt.Errorf("unknown log format (want text or json)")
}

func setServerAddr(c *Config, p param) error {
	s, err := needValue(p)
	if err != nil {
		return err
	}
	if !strings.Contains(s, "://") {
		return fmt.Errorf("not an address (want vsock://CID:PORT or unix:///path)")
	}
	c.ServerAddr = s
	return nil
}

func setUseVsock(c *Config, p param) error {
	v, err := parseBool(p)
	if err != nil {
		return err
	}
	c.UseVsock = &v
	return nil
}

func setPolicyFile(c *Config, p param) error {
	s, err := needValue(p)
	if err != nil {
		return err
	}
	c.PolicyFile = s
	return nil
}
