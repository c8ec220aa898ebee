package main

import (
	"context"
	"fmt"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
)

func init() {
	register(&verb{name: "exec", args: "--id ID [--exec-id E] [--tty] [--env K=V]... -- CMD...", summary: "run a command in a running container, streaming its stdio; exit with its status", run: runExec})
	register(&verb{name: "run", args: "[--id ID] --rootfs DIR [--tty] [--env K=V]... [--memory BYTES] -- CMD...", summary: "create, start, attach to, wait for and remove a container; exit with its status", run: runRun})
}

func runExec(e *env, args []string) error {
	fs := e.newFlags("exec")
	id := fs.String("id", "", "container id")
	execID := fs.String("exec-id", "", "id for the new process (default: random)")
	tty := fs.Bool("tty", false, "give the process a terminal")
	var envs stringList
	fs.Var(&envs, "env", "environment variable `K=V`; repeatable")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := requireID(*id); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageErr("no command given (put it after --)")
	}
	if *execID == "" {
		*execID = randomID("exec-")
	}
	proc := client.DefaultProcess(fs.Args(), *tty)
	if err := applyEnv(proc, envs); err != nil {
		return err
	}
	if *tty {
		proc.ConsoleSize = e.consoleSize()
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	if _, err := c.ExecProcess(ctx, &agentpb.ExecProcessRequest{ContainerId: *id, ExecId: *execID, Process: proc}); err != nil {
		return err
	}
	s := newSession(e, c, *id, *execID, *tty)
	defer s.close()
	if err := s.attach(); err != nil {
		return err
	}
	status, err := s.wait()
	if err != nil {
		return err
	}
	return exitStatus(status)
}

func runRun(e *env, args []string) (err error) {
	fs := e.newFlags("run")
	id := fs.String("id", "", "container id (default: random)")
	rmTimeout := fs.Uint("rm-timeout", 10, "seconds RemoveContainer may take at the end")
	var o containerOpts
	o.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *id == "" {
		*id = randomID("run-")
	}
	spec, err := o.spec(*id, fs.Args())
	if err != nil {
		return err
	}
	if o.tty {
		spec.Process.ConsoleSize = e.consoleSize()
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	if err := createContainer(ctx, c, *id, spec); err != nil {
		return err
	}
	// Remove the container however we leave, like ctr run --rm.
	defer func() {
		rctx, rcancel := context.WithTimeout(context.Background(), e.timeout+timeSeconds(*rmTimeout))
		defer rcancel()
		_, rerr := c.RemoveContainer(rctx, &agentpb.RemoveContainerRequest{ContainerId: *id, Timeout: uint32(*rmTimeout)})
		if rerr != nil && err == nil {
			err = fmt.Errorf("remove container %s: %w", *id, rerr)
		}
	}()
	if _, err := c.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: *id}); err != nil {
		return fmt.Errorf("start container %s: %w", *id, err)
	}
	s := newSession(e, c, *id, *id, o.tty)
	defer s.close()
	if err := s.attach(); err != nil {
		return err
	}
	status, err := s.wait()
	if err != nil {
		return err
	}
	return exitStatus(status)
}
