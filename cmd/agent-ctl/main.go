// Command agent-ctl talks to a kata-agent over the Kata agent API, on gRPC
// or ttrpc, for debugging and for running containers without a host runtime.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/kguest/kguest/internal/version"
	"github.com/kguest/kguest/protocols/client"
)

// verb is one agent-ctl subcommand. Each lives in a file with its group and
// registers itself from init().
type verb struct {
	name    string
	args    string // argument synopsis for help
	summary string
	// run parses args (without the verb) and does the work.
	run func(e *env, args []string) error
}

var verbs = map[string]*verb{}

func register(v *verb) {
	if _, dup := verbs[v.name]; dup {
		panic("agent-ctl: verb registered twice: " + v.name)
	}
	verbs[v.name] = v
}

// errUsage marks bad command-line use (exit status 2).
var errUsage = errors.New("usage error")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// exitError makes agent-ctl exit with a process's status without a message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// env is what every verb gets: the global options and a lazily made client.
type env struct {
	addr    string
	proto   client.Protocol
	timeout time.Duration

	stdin          io.Reader
	stdout, stderr io.Writer

	c client.Client
}

// client connects on first use.
func (e *env) client() (client.Client, error) {
	if e.c != nil {
		return e.c, nil
	}
	if e.addr == "" {
		return nil, usageErr("no agent address: pass --addr or set KATA_AGENT_ADDR")
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	c, err := client.New(ctx, e.addr, e.proto)
	if err != nil {
		return nil, err
	}
	e.c = c
	return c, nil
}

// rpcContext bounds one call by --timeout.
func (e *env) rpcContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), e.timeout)
}

// newFlags returns a flag set for a verb that reports errors instead of exiting.
func (e *env) newFlags(v string) *flag.FlagSet {
	fs := flag.NewFlagSet(v, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		vb := verbs[v]
		fmt.Fprintf(e.stderr, "Usage: agent-ctl [GLOBAL OPTIONS] %s %s\n\n%s\n", v, vb.args, vb.summary)
		var hasFlags bool
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(e.stderr, "\nOptions:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parse parses verb flags, turning flag errors into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func usage(w io.Writer, global *flag.FlagSet) {
	fmt.Fprintf(w, "agent-ctl %s: talk to a kata-agent\n\nUsage: agent-ctl [GLOBAL OPTIONS] VERB [ARGS]\n\nGlobal options:\n", version.Version)
	global.SetOutput(w)
	global.PrintDefaults()
	fmt.Fprintf(w, "\nVerbs:\n")
	names := make([]string, 0, len(verbs))
	for n := range verbs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-16s %s\n", n, verbs[n].summary)
	}
	fmt.Fprintf(w, "\nAddresses: vsock://CID:PORT, hvsock:///path/to/uds:PORT, unix:///path, unix://@abstract, serial:///path/to/chardev.sock\n")
	fmt.Fprintf(w, "Run 'agent-ctl VERB --help' for a verb's options.\n")
}

// run is main without os.Exit, for tests.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	global := flag.NewFlagSet("agent-ctl", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.StringVar(&e.addr, "addr", os.Getenv("KATA_AGENT_ADDR"), "agent address (default $KATA_AGENT_ADDR)")
	protoName := global.String("proto", string(client.TTRPC), "RPC protocol: grpc or ttrpc")
	global.DurationVar(&e.timeout, "timeout", 30*time.Second, "timeout for connecting and for each call")
	showVersion := global.Bool("version", false, "print the agent-ctl version")
	global.Usage = func() { usage(stderr, global) }
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.Version)
		return 0
	}
	p, err := client.ParseProtocol(*protoName)
	if err != nil {
		fmt.Fprintf(stderr, "agent-ctl: %v\n", err)
		return 2
	}
	e.proto = p
	if global.NArg() == 0 {
		usage(stderr, global)
		return 2
	}
	name := global.Arg(0)
	if name == "help" {
		usage(stdout, global)
		return 0
	}
	v, ok := verbs[name]
	if !ok {
		fmt.Fprintf(stderr, "agent-ctl: unknown verb %q (see agent-ctl --help)\n", name)
		return 2
	}
	err = v.run(e, global.Args()[1:])
	if e.c != nil {
		e.c.Close()
	}
	// End serial sessions cleanly so the agent sees a hang-up, not a stall.
	client.DefaultDialer.Close()
	return exitCode(stderr, err)
}

// exitCode reports err the way users expect: gRPC code and message for
// agent errors, the process's own status for exitError.
func exitCode(stderr io.Writer, err error) int {
	var ee exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "agent-ctl: %s\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	}
	fmt.Fprintf(stderr, "agent-ctl: %s\n", describe(err))
	return 1
}

// describe renders an error as "Code: message" when it carries a gRPC
// status, keeping any context wrapped around it ("Code: context: message").
func describe(err error) string {
	var se interface {
		error
		GRPCStatus() *status.Status
	}
	if !errors.As(err, &se) {
		return err.Error()
	}
	s := se.GRPCStatus()
	return fmt.Sprintf("%s: %s", s.Code(), strings.Replace(err.Error(), se.Error(), s.Message(), 1))
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
