package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
)

func init() {
	register(&verb{name: "create", args: "--id ID --rootfs DIR [--tty] [--env K=V]... [--memory BYTES] -- CMD...", summary: "create a container (the sandbox too, if there is none)", run: runCreate})
	register(&verb{name: "start", args: "--id ID", summary: "start a created container", run: runStart})
	register(&verb{name: "kill", args: "--id ID [--exec-id E] [--signal N]", summary: "signal a container's process (without --exec-id the init; KILL then reaches every process)", run: runKill})
	register(&verb{name: "wait", args: "--id ID [--exec-id E]", summary: "wait for a process, print its status and exit with it", run: runWait})
	register(&verb{name: "rm", args: "--id ID [--timeout S]", summary: "remove a container, killing its processes", run: runRm})
	register(&verb{name: "stats", args: "--id ID", summary: "print a container's cgroup and network statistics", run: runStats})
	register(&verb{name: "pause", args: "--id ID", summary: "freeze every process of a container", run: runPause})
	register(&verb{name: "resume", args: "--id ID", summary: "thaw a paused container", run: runResume})
	register(&verb{name: "update", args: "--id ID --memory BYTES", summary: "change a container's resource limits", run: runUpdate})
	register(&verb{name: "ps", args: "--id ID [--format table|json] [-- PS-ARGS...]", summary: "list a container's processes", run: runPs})
}

// containerOpts are the flags create and run share.
type containerOpts struct {
	rootfs string
	tty    bool
	env    stringList
	memory int64
}

func (o *containerOpts) register(fs *flag.FlagSet) {
	fs.StringVar(&o.rootfs, "rootfs", "", "container root filesystem `DIR` (a path on the agent's side)")
	fs.BoolVar(&o.tty, "tty", false, "give the process a terminal")
	fs.Var(&o.env, "env", "environment variable `K=V`; repeatable")
	fs.Int64Var(&o.memory, "memory", 0, "memory limit in `BYTES` (0: none)")
}

// spec builds the container spec from the options and the command.
func (o *containerOpts) spec(id string, args []string) (*agentpb.Spec, error) {
	if o.rootfs == "" {
		return nil, usageErr("--rootfs is required")
	}
	if len(args) == 0 {
		return nil, usageErr("no command given (put it after --)")
	}
	if o.memory < 0 {
		return nil, usageErr("--memory must not be negative")
	}
	rootfs, err := filepath.Abs(o.rootfs)
	if err != nil {
		return nil, err
	}
	s := client.DefaultSpec(id, rootfs, args)
	s.Process = client.DefaultProcess(args, o.tty)
	if err := applyEnv(s.Process, o.env); err != nil {
		return nil, err
	}
	if o.memory > 0 {
		client.SetMemoryLimit(s, o.memory)
	}
	return s, nil
}

// applyEnv adds K=V pairs, replacing defaults of the same name.
func applyEnv(p *agentpb.Process, env []string) error {
	for _, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usageErr("--env %q: want K=V", kv)
		}
		replaced := false
		for i, old := range p.Env {
			if strings.HasPrefix(old, k+"=") {
				p.Env[i], replaced = kv, true
			}
		}
		if !replaced {
			p.Env = append(p.Env, kv)
		}
	}
	return nil
}

func randomID(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// createContainer makes sure there is a sandbox and creates the container,
// its init process known by the container id as Kata hosts do.
func createContainer(ctx context.Context, c client.Client, id string, spec *agentpb.Spec) error {
	if err := ensureSandbox(ctx, c); err != nil {
		return err
	}
	_, err := c.CreateContainer(ctx, &agentpb.CreateContainerRequest{
		ContainerId: id,
		ExecId:      id,
		OCI:         spec,
	})
	if err != nil {
		return fmt.Errorf("create container %s: %w", id, err)
	}
	return nil
}

func requireID(id string) error {
	if id == "" {
		return usageErr("--id is required")
	}
	return nil
}

func runCreate(e *env, args []string) error {
	fs := e.newFlags("create")
	id := fs.String("id", "", "container id")
	var o containerOpts
	o.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := requireID(*id); err != nil {
		return err
	}
	spec, err := o.spec(*id, fs.Args())
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	return createContainer(ctx, c, *id, spec)
}

func runStart(e *env, args []string) error {
	fs := e.newFlags("start")
	id := fs.String("id", "", "container id")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := requireID(*id); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	_, err = c.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: *id})
	return err
}

// parseSignal accepts a number or a name such as TERM or SIGKILL.
func parseSignal(s string) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		if n == 0 || n > 64 {
			return 0, usageErr("signal %d out of range", n)
		}
		return uint32(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return uint32(sig), nil
	}
	return 0, usageErr("unknown signal %q", s)
}

func runKill(e *env, args []string) error {
	fs := e.newFlags("kill")
	id := fs.String("id", "", "container id")
	execID := fs.String("exec-id", "", "process to signal (default: the init; with KILL, every process of the container)")
	sigName := fs.String("signal", "TERM", "signal number or name")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := requireID(*id); err != nil {
		return err
	}
	sig, err := parseSignal(*sigName)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	_, err = c.SignalProcess(ctx, &agentpb.SignalProcessRequest{ContainerId: *id, ExecId: *execID, Signal: sig})
	return err
}

// exitStatus turns a WaitProcess status into agent-ctl's own exit.
func exitStatus(status int32) error {
	if status == 0 {
		return nil
	}
	if status < 0 || status > 255 {
		return exitError{255}
	}
	return exitError{int(status)}
}

func runWait(e *env, args []string) error {
	fs := e.newFlags("wait")
	id := fs.String("id", "", "container id")
	execID := fs.String("exec-id", "", "process to wait for (default: the container's init)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := requireID(*id); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	// A process may run for as long as it likes: no deadline here.
	resp, err := c.WaitProcess(context.Background(), &agentpb.WaitProcessRequest{ContainerId: *id, ExecId: *execID})
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, resp.Status)
	return exitStatus(resp.Status)
}

func runRm(e *env, args []string) error {
	fs := e.newFlags("rm")
	id := fs.String("id", "", "container id")
	timeout := fs.Uint("timeout", 0, "seconds to wait for the processes to die (0: the agent waits for ever)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := requireID(*id); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx := context.Background()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*timeout)*time.Second+e.timeout)
		defer cancel()
	}
	_, err = c.RemoveContainer(ctx, &agentpb.RemoveContainerRequest{ContainerId: *id, Timeout: uint32(*timeout)})
	return err
}

// printJSON prints m as indented protojson. protojson varies its spacing on
// purpose; re-indenting with encoding/json makes the output stable for scripts.
func printJSON(e *env, m proto.Message) error {
	raw, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = out.WriteTo(e.stdout)
	return err
}

func runStats(e *env, args []string) error {
	fs := e.newFlags("stats")
	id := fs.String("id", "", "container id")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := requireID(*id); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	resp, err := c.StatsContainer(ctx, &agentpb.StatsContainerRequest{ContainerId: *id})
	if err != nil {
		return err
	}
	return printJSON(e, resp)
}

func runPs(e *env, args []string) error {
	fs := e.newFlags("ps")
	id := fs.String("id", "", "container id")
	format := fs.String("format", "table", "output format: table or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := requireID(*id); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	resp, err := c.ListProcesses(ctx, &agentpb.ListProcessesRequest{ContainerId: *id, Format: *format, Args: fs.Args()})
	if err != nil {
		return err
	}
	out := resp.ProcessList
	e.stdout.Write(out)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		fmt.Fprintln(e.stdout)
	}
	return nil
}

func timeSeconds(s uint) time.Duration { return time.Duration(s) * time.Second }

// idVerb runs an RPC that takes only a container id.
func idVerb(e *env, name string, args []string, call func(context.Context, client.Client, string) error) error {
	fs := e.newFlags(name)
	id := fs.String("id", "", "container id")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := requireID(*id); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("%s takes no arguments", name)
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	return call(ctx, c, *id)
}

func runPause(e *env, args []string) error {
	return idVerb(e, "pause", args, func(ctx context.Context, c client.Client, id string) error {
		_, err := c.PauseContainer(ctx, &agentpb.PauseContainerRequest{ContainerId: id})
		return err
	})
}

func runResume(e *env, args []string) error {
	return idVerb(e, "resume", args, func(ctx context.Context, c client.Client, id string) error {
		_, err := c.ResumeContainer(ctx, &agentpb.ResumeContainerRequest{ContainerId: id})
		return err
	})
}

func runUpdate(e *env, args []string) error {
	fs := e.newFlags("update")
	id := fs.String("id", "", "container id")
	memory := fs.Int64("memory", 0, "memory limit in `BYTES`")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := requireID(*id); err != nil {
		return err
	}
	if *memory <= 0 {
		return usageErr("update needs --memory BYTES")
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	_, err = c.UpdateContainer(ctx, &agentpb.UpdateContainerRequest{
		ContainerId: *id,
		Resources:   &agentpb.LinuxResources{Memory: &agentpb.LinuxMemory{Limit: *memory}},
	})
	return err
}
