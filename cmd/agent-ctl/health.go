package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
)

func init() {
	register(&verb{name: "check", summary: "print the agent's serving status (Health.Check)", run: runCheck})
	register(&verb{name: "version", summary: "print the agent version and API version (Health.Version)", run: runVersion})
	register(&verb{name: "wait-ready", args: "[--timeout D]", summary: "wait until the agent answers Health.Check", run: runWaitReady})
}

func runCheck(e *env, args []string) error {
	fs := e.newFlags("check")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("check takes no arguments")
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	resp, err := c.Check(ctx, &agentpb.CheckRequest{})
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, resp.Status)
	if resp.Status != agentpb.HealthCheckResponse_SERVING {
		return exitError{1}
	}
	return nil
}

func runVersion(e *env, args []string) error {
	fs := e.newFlags("version")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("version takes no arguments")
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	resp, err := c.Version(ctx, &agentpb.CheckRequest{})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "agent version: %s\napi version: %s\n", resp.AgentVersion, resp.GrpcVersion)
	return nil
}

func runWaitReady(e *env, args []string) error {
	fs := e.newFlags("wait-ready")
	timeout := fs.Duration("timeout", e.timeout, "how long to wait (default: the global --timeout)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("wait-ready takes no arguments")
	}
	if e.addr == "" {
		return usageErr("no agent address: pass --addr or set KATA_AGENT_ADDR")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	start := time.Now()
	if err := client.WaitReady(ctx, e.addr, e.proto); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "ready after %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}
