package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kguest/kguest/internal/version"
	rootfsbuilder "github.com/kguest/kguest/rootfs-builder"
)

func init() {
	register(&command{
		name:    "rootfs",
		summary: "lay out a guest rootfs tree around kata-agent (no root needed)",
		run:     runRootfs,
	})
}

// imgFlagSet makes a flag set whose --help prints usage, options and examples.
func imgFlagSet(name, synopsis, about, examples string) *flag.FlagSet {
	fs := flag.NewFlagSet("osbuilder "+name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: osbuilder %s %s\n\n%s\n\nOptions:\n", name, synopsis, strings.TrimSpace(about))
		fs.PrintDefaults()
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.Trim(examples, "\n"))
	}
	return fs
}

// imgParse parses args; bad flags are usage errors, --help is flag.ErrHelp.
func imgParse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// imgEpoch is $SOURCE_DATE_EPOCH, or the fixed default.
func imgEpoch() (int64, error) {
	return rootfsbuilder.SourceDateEpochFromEnv(rootfsbuilder.DefaultSourceDateEpoch)
}

// imgContext is cancelled by SIGINT/SIGTERM so temporary outputs are removed.
func imgContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func runRootfs(args []string) error {
	fs := imgFlagSet("rootfs", "--agent FILE -o DIR [OPTIONS]", `
Lays out a rootfs for kata-agent: the directories it needs (proc, sys, dev,
run, tmp, etc, var/tmp), an empty /etc/resolv.conf, the agent as /sbin/init
(with /init pointing to it) or, with --agent-init=false, as
/usr/bin/kata-agent with systemd units for a distro-based image.

Device nodes (dev/console 5:1, dev/null 1:3) are not created but listed in
/`+rootfsbuilder.DevicesFile+` (gen_init_cpio "nod" lines), which
'osbuilder initrd' and 'osbuilder image' turn into real nodes. The provenance
is written to /`+rootfsbuilder.ProvenanceFile+`.

The agent must be a static executable for the target architecture.
SOURCE_DATE_EPOCH is recorded for the packers.`, `
  osbuilder rootfs --agent bin/kata-agent -o rootfs
  osbuilder rootfs --agent bin/kata-agent -o rootfs --debug-shell
  osbuilder rootfs --agent bin/kata-agent -o rootfs --extra ./policy.rego:/etc/kata-opa/default-policy.rego
  osbuilder rootfs --agent kata-agent.arm64 --arch arm64 -o rootfs-arm64 --modules /lib/modules/6.1.0`)
	var opts rootfsbuilder.Options
	var arch string
	fs.StringVar(&opts.Agent, "agent", "", "static kata-agent `binary` to install")
	fs.StringVar(&opts.Out, "o", "", "output `directory` (created; must not exist or be empty unless --force)")
	fs.BoolVar(&opts.Force, "force", false, "replace the output directory if it is not empty")
	fs.BoolVar(&opts.AgentInit, "agent-init", true, "the agent is init (/sbin/init, /init); false: /usr/bin/kata-agent with a systemd unit")
	fs.Func("extra", "copy a host file or directory into the rootfs, as `SRC:DST` (repeatable)", func(s string) error {
		e, err := rootfsbuilder.ParseExtra(s)
		if err != nil {
			return err
		}
		opts.Extras = append(opts.Extras, e)
		return nil
	})
	fs.StringVar(&opts.Modules, "modules", "", "kernel modules `directory` (a /lib/modules/VERSION tree), copied to /lib/modules/VERSION")
	fs.BoolVar(&opts.DebugShell, "debug-shell", false, "add a shell (/bin/sh) and core tools built from u-root for the debug console (needs the Go toolchain)")
	fs.StringVar(&arch, "arch", "", "target `architecture` (amd64/x86_64, arm64/aarch64, s390x, ppc64le, riscv64; default: this host's)")
	quiet := fs.Bool("q", false, "no progress output")
	if err := imgParse(fs, args); err != nil {
		return err
	}
	if opts.Agent == "" || opts.Out == "" {
		return fmt.Errorf("%w: --agent and -o are required (see --help)", errUsage)
	}
	a, err := rootfsbuilder.ParseArch(arch)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	opts.Arch = a
	if opts.SourceDateEpoch, err = imgEpoch(); err != nil {
		return err
	}
	opts.BuilderVersion = version.Version
	if !*quiet {
		opts.Progress = os.Stderr
	}
	ctx, cancel := imgContext()
	defer cancel()
	return rootfsbuilder.Build(ctx, opts)
}
