// Command debugshell is the guest's debug console: a POSIX shell
// (mvdan.cc/sh, as in u-root's gosh) with u-root's core commands built in.
// It is a multi-call binary: installed as /bin/sh with links named after the
// commands (ls, cat, ...), it runs the command its name says.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/core"
	"github.com/u-root/u-root/pkg/core/base64"
	"github.com/u-root/u-root/pkg/core/cat"
	"github.com/u-root/u-root/pkg/core/chmod"
	"github.com/u-root/u-root/pkg/core/cp"
	"github.com/u-root/u-root/pkg/core/find"
	"github.com/u-root/u-root/pkg/core/ls"
	"github.com/u-root/u-root/pkg/core/mkdir"
	"github.com/u-root/u-root/pkg/core/mktemp"
	"github.com/u-root/u-root/pkg/core/mv"
	"github.com/u-root/u-root/pkg/core/rm"
	"github.com/u-root/u-root/pkg/core/shasum"
	"github.com/u-root/u-root/pkg/core/tar"
	"github.com/u-root/u-root/pkg/core/touch"
	"github.com/u-root/u-root/pkg/core/xargs"
	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/interp"
	"mvdan.cc/sh/v3/syntax"
)

var applets = map[string]func() core.Command{
	"base64": base64.New,
	"cat":    cat.New,
	"chmod":  chmod.New,
	"cp":     cp.New,
	"find":   find.New,
	"ls":     ls.New,
	"mkdir":  mkdir.New,
	"mktemp": mktemp.New,
	"mv":     mv.New,
	"rm":     rm.New,
	"shasum": shasum.New,
	"tar":    tar.New,
	"touch":  touch.New,
	"xargs":  xargs.New,
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "debugshell" && len(args) > 0 && args[0] == "--list" {
		fmt.Println(strings.Join(appletNames(), "\n"))
		return
	}
	if mk, ok := applets[name]; ok {
		c := mk()
		c.SetIO(os.Stdin, os.Stdout, os.Stderr)
		if err := c.Run(args...); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(shell(args))
}

func appletNames() []string {
	names := make([]string, 0, len(applets))
	for n := range applets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// runApplet runs the built-in commands in the shell's process, so they work
// without links on disk and without fork+exec.
func runApplet(next interp.ExecHandlerFunc) interp.ExecHandlerFunc {
	return func(ctx context.Context, args []string) error {
		mk, ok := applets[args[0]]
		if !ok {
			return next(ctx, args)
		}
		hc := interp.HandlerCtx(ctx)
		stdin := hc.Stdin
		if stdin == nil {
			stdin = strings.NewReader("")
		}
		c := mk()
		c.SetIO(stdin, hc.Stdout, hc.Stderr)
		c.SetWorkingDir(hc.Dir)
		c.SetLookupEnv(func(k string) (string, bool) {
			v := hc.Env.Get(k)
			return v.String(), v.IsSet()
		})
		if err := c.RunContext(ctx, args[1:]...); err != nil {
			fmt.Fprintf(hc.Stderr, "%s: %v\n", args[0], err)
			return interp.NewExitStatus(1)
		}
		return nil
	}
}

func shell(args []string) int {
	opts := []interp.RunnerOption{
		interp.StdIO(os.Stdin, os.Stdout, os.Stderr),
		interp.ExecHandlers(runApplet),
		interp.Env(expand.ListEnviron(append(os.Environ(), defaultEnv()...)...)),
	}
	var (
		src  io.Reader
		name string
	)
	switch {
	case len(args) >= 2 && args[0] == "-c":
		src, name = strings.NewReader(args[1]), "sh -c"
		opts = append(opts, interp.Params(args[2:]...))
	case len(args) >= 1 && args[0] != "-i" && args[0] != "-":
		f, err := os.Open(args[0])
		if err != nil {
			fmt.Fprintf(os.Stderr, "sh: %v\n", err)
			return 127
		}
		defer f.Close()
		src, name = f, args[0]
		opts = append(opts, interp.Params(args[1:]...))
	}
	if src == nil {
		opts = append(opts, interp.Interactive(true))
	}
	r, err := interp.New(opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sh: %v\n", err)
		return 2
	}
	if src != nil {
		prog, err := syntax.NewParser().Parse(src, name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sh: %v\n", err)
			return 2
		}
		return status(r.Run(context.Background(), prog))
	}
	return interactive(r)
}

func interactive(r *interp.Runner) int {
	p := syntax.NewParser()
	fmt.Fprint(os.Stdout, "# ")
	var last error
	err := p.Interactive(os.Stdin, func(stmts []*syntax.Stmt) bool {
		if p.Incomplete() {
			fmt.Fprint(os.Stdout, "> ")
			return true
		}
		for _, st := range stmts {
			last = r.Run(context.Background(), st)
			if r.Exited() {
				return false
			}
		}
		fmt.Fprint(os.Stdout, "# ")
		return true
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "sh: %v\n", err)
		return 2
	}
	return status(last)
}

func status(err error) int {
	if err == nil {
		return 0
	}
	if es, ok := interp.IsExitStatus(err); ok {
		return int(es)
	}
	fmt.Fprintf(os.Stderr, "sh: %v\n", err)
	return 1
}

func defaultEnv() []string {
	var env []string
	if os.Getenv("PATH") == "" {
		env = append(env, "PATH=/bin:/sbin:/usr/bin:/usr/sbin")
	}
	if os.Getenv("HOME") == "" {
		env = append(env, "HOME=/")
	}
	return env
}
