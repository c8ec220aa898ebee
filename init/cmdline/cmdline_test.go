package cmdline

import (
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

func boolp(b bool) *bool { return &b }

func TestParse(t *testing.T) {
	def := Default()
	with := func(f func(*Config)) Config {
		c := Default()
		f(&c)
		return c
	}
	tests := []struct {
		name  string
		in    string
		want  Config
		warns []string // substrings, one per expected warning, in order
	}{
		{name: "empty", in: "", want: def},
		{name: "kernel keys only", in: "console=ttyS0 root=/dev/vda1 ro quiet init=/init", want: def},
		{
			name: "all keys",
			in: "console=hvc0 agent.log=debug agent.log_format=json agent.log_vport=1025 agent.debug_console " +
				"agent.debug_console_vport=1026 agent.hotplug_timeout=10 agent.container_pipe_size=65536 " +
				"agent.server_addr=unix:///run/a.sock agent.use_vsock=false agent.devmode " +
				"agent.unified_cgroup_hierarchy=1 agent.launch_process_timeout=12 agent.policy_file=/etc/p.rego\n",
			want: Config{
				LogLevel: slog.LevelDebug, LogFormat: "json", LogVport: 1025, DebugConsole: true,
				DebugConsoleVport: 1026, HotplugTimeout: 10 * time.Second, ContainerPipeSize: 65536,
				ServerAddr: "unix:///run/a.sock", UseVsock: boolp(false), DevMode: true,
				UnifiedCgroupHierarchy: true, LaunchProcessTimeout: 12 * time.Second, PolicyFile: "/etc/p.rego",
			},
		},
		{name: "bare bool", in: "agent.devmode", want: with(func(c *Config) { c.DevMode = true })},
		{name: "bool false", in: "agent.debug_console=0", want: def},
		{name: "bool yes", in: "agent.debug_console=yes", want: with(func(c *Config) { c.DebugConsole = true })},
		{name: "use_vsock bare", in: "agent.use_vsock", want: with(func(c *Config) { c.UseVsock = boolp(true) })},
		{name: "use_vsock true", in: "agent.use_vsock=true", want: with(func(c *Config) { c.UseVsock = boolp(true) })},
		{name: "levels trace", in: "agent.log=trace", want: with(func(c *Config) { c.LogLevel = LevelTrace })},
		{name: "levels warning", in: "agent.log=WARNING", want: with(func(c *Config) { c.LogLevel = slog.LevelWarn })},
		{name: "levels critical", in: "agent.log=critical", want: with(func(c *Config) { c.LogLevel = LevelCritical })},
		{
			name: "quoted value",
			in:   `agent.server_addr="unix:///tmp/a b.sock" agent.log=error`,
			want: with(func(c *Config) { c.ServerAddr = "unix:///tmp/a b.sock"; c.LogLevel = slog.LevelError }),
		},
		{
			name: "quoted whole entry",
			in:   `"agent.policy_file=/p q.rego" agent.devmode`,
			want: with(func(c *Config) { c.PolicyFile = "/p q.rego"; c.DevMode = true }),
		},
		{name: "tabs and repeated spaces", in: "\tagent.log=debug   \t agent.devmode  ", want: with(func(c *Config) { c.LogLevel = slog.LevelDebug; c.DevMode = true })},
		{name: "later wins", in: "agent.log=debug agent.log=error", want: with(func(c *Config) { c.LogLevel = slog.LevelError })},
		{name: "systemd cgroup v2", in: "systemd.unified_cgroup_hierarchy=1", want: with(func(c *Config) { c.UnifiedCgroupHierarchy = true })},
		{name: "systemd cgroup bare", in: "systemd.unified_cgroup_hierarchy", want: with(func(c *Config) { c.UnifiedCgroupHierarchy = true })},
		{name: "agent cgroup key wins", in: "agent.unified_cgroup_hierarchy=0 systemd.unified_cgroup_hierarchy=1", want: def},
		{
			name:  "systemd cgroup malformed",
			in:    "systemd.unified_cgroup_hierarchy=maybe",
			want:  def,
			warns: []string{`systemd.unified_cgroup_hierarchy="maybe": not a boolean`},
		},
		{name: "unknown key", in: "agent.frobnicate=1", want: def, warns: []string{`agent.frobnicate="1": unknown key`}},
		{name: "unsupported kata key", in: "agent.trace=true", want: def, warns: []string{`agent.trace="true": not supported`}},
		{name: "bad level", in: "agent.log=loud", want: def, warns: []string{`agent.log="loud": unknown log level`}},
		{name: "bad format", in: "agent.log_format=xml", want: def, warns: []string{`agent.log_format="xml": unknown log format`}},
		{name: "missing value", in: "agent.log", want: def, warns: []string{"agent.log: missing value, keeping the default"}},
		{name: "empty value", in: "agent.log_vport=", want: def, warns: []string{"agent.log_vport: missing value"}},
		{name: "negative vport", in: "agent.log_vport=-1", want: def, warns: []string{`agent.log_vport="-1": not an unsigned 32-bit integer`}},
		{name: "vport too big", in: "agent.debug_console_vport=4294967296", want: def, warns: []string{`agent.debug_console_vport="4294967296": not an unsigned`}},
		{name: "zero timeout", in: "agent.hotplug_timeout=0", want: def, warns: []string{`agent.hotplug_timeout="0": not a positive whole number of seconds`}},
		{name: "timeout with unit", in: "agent.launch_process_timeout=5s", want: def, warns: []string{`agent.launch_process_timeout="5s": not a positive`}},
		{name: "bad bool", in: "agent.devmode=perhaps", want: def, warns: []string{`agent.devmode="perhaps": not a boolean`}},
		{name: "bad addr", in: "agent.server_addr=/tmp/a.sock", want: def, warns: []string{`agent.server_addr="/tmp/a.sock": not an address`}},
		{
			name:  "malformed keeps earlier good value",
			in:    "agent.hotplug_timeout=7 agent.hotplug_timeout=x agent.log=debug",
			want:  with(func(c *Config) { c.HotplugTimeout = 7 * time.Second; c.LogLevel = slog.LevelDebug }),
			warns: []string{`agent.hotplug_timeout="x"`},
		},
		{
			name:  "several warnings in order",
			in:    "agent.a agent.log=x agent.devmode",
			want:  with(func(c *Config) { c.DevMode = true }),
			warns: []string{"agent.a: unknown key", `agent.log="x"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warns := Parse(tt.in)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q)\n got  %+v\n want %+v", tt.in, got, tt.want)
			}
			if len(warns) != len(tt.warns) {
				t.Fatalf("Parse(%q) warnings = %v, want %d matching %q", tt.in, warns, len(tt.warns), tt.warns)
			}
			for i, w := range warns {
				if !strings.Contains(w.String(), tt.warns[i]) {
					t.Errorf("warning %d = %q, want it to contain %q", i, w.String(), tt.warns[i])
				}
			}
		})
	}
}

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		name  string
		cmd   string
		env   map[string]string
		check func(Config) bool
		warns int
	}{
		{
			name: "env overrides cmdline",
			cmd:  "agent.server_addr=vsock://-1:1024 agent.log=error agent.policy_file=/a",
			env:  map[string]string{EnvServerAddr: "unix:///tmp/x.sock", EnvLogLevel: "debug", EnvPolicyFile: "/b", EnvLogFormat: "json"},
			check: func(c Config) bool {
				return c.ServerAddr == "unix:///tmp/x.sock" && c.LogLevel == slog.LevelDebug && c.PolicyFile == "/b" && c.LogFormat == "json"
			},
		},
		{
			name:  "empty env ignored",
			cmd:   "agent.log=error",
			env:   map[string]string{EnvLogLevel: ""},
			check: func(c Config) bool { return c.LogLevel == slog.LevelError },
		},
		{
			name:  "bad env warns and keeps cmdline",
			cmd:   "agent.log=error",
			env:   map[string]string{EnvLogLevel: "chatty", EnvServerAddr: "nonsense"},
			check: func(c Config) bool { return c.LogLevel == slog.LevelError && c.ServerAddr == "" },
			warns: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, w := Parse(tt.cmd)
			if len(w) != 0 {
				t.Fatalf("unexpected cmdline warnings %v", w)
			}
			warns := ApplyEnv(&c, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if !tt.check(c) {
				t.Errorf("config after env = %+v", c)
			}
			if len(warns) != tt.warns {
				t.Errorf("warnings = %v, want %d", warns, tt.warns)
			}
		})
	}
}

func TestLoadReadsProc(t *testing.T) {
	t.Setenv(EnvServerAddr, "unix:///tmp/load-test.sock")
	c, _ := Load()
	if c.ServerAddr != "unix:///tmp/load-test.sock" {
		t.Errorf("ServerAddr = %q, want the environment override", c.ServerAddr)
	}
	if c.HotplugTimeout == 0 || c.LaunchProcessTimeout == 0 {
		t.Errorf("defaults lost: %+v", c)
	}
}
