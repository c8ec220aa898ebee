package main

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
)

// defaultSandboxID names the sandbox agent-ctl creates on its own.
const defaultSandboxID = "agent-ctl"

func init() {
	register(&verb{name: "create-sandbox", args: "[--hostname H] [--dns IP]... [--id ID]", summary: "set up the sandbox (CreateSandbox)", run: runCreateSandbox})
	register(&verb{name: "destroy-sandbox", summary: "tear down the sandbox and every container in it (DestroySandbox)", run: runDestroySandbox})
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// resolvConfLines turns --dns values into resolv.conf lines, as Kata hosts
// send them; a value that already is a line ("search example.com") is kept.
func resolvConfLines(dns []string) []string {
	var out []string
	for _, d := range dns {
		if strings.ContainsAny(strings.TrimSpace(d), " \t") {
			out = append(out, strings.TrimSpace(d))
		} else {
			out = append(out, "nameserver "+d)
		}
	}
	return out
}

func runCreateSandbox(e *env, args []string) error {
	fs := e.newFlags("create-sandbox")
	hostname := fs.String("hostname", "", "guest hostname")
	id := fs.String("id", defaultSandboxID, "sandbox id")
	var dns stringList
	fs.Var(&dns, "dns", "DNS server `IP` (or a full resolv.conf line); repeatable")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("create-sandbox takes no arguments")
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	_, err = c.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{
		Hostname:  *hostname,
		Dns:       resolvConfLines(dns),
		SandboxId: *id,
	})
	return err
}

func runDestroySandbox(e *env, args []string) error {
	fs := e.newFlags("destroy-sandbox")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("destroy-sandbox takes no arguments")
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	_, err = c.DestroySandbox(ctx, &agentpb.DestroySandboxRequest{})
	return err
}

// sandboxExists tells whether CreateSandbox failed only because there is one.
func sandboxExists(err error) bool {
	s, ok := status.FromError(err)
	if !ok {
		return false
	}
	if s.Code() == codes.AlreadyExists {
		return true
	}
	return strings.Contains(strings.ToLower(s.Message()), "exist")
}

// ensureSandbox creates the default sandbox unless one exists.
func ensureSandbox(ctx context.Context, c client.Client) error {
	_, err := c.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{SandboxId: defaultSandboxID})
	if err != nil && !sandboxExists(err) {
		return fmt.Errorf("create sandbox: %w", err)
	}
	return nil
}
