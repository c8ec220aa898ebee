package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	kernelconfig "github.com/kguest/kguest/kernel-config"
)

func init() {
	register(&command{
		name:    "kernel-config",
		summary: "generate and verify a guest kernel .config from the fragments",
		run:     runKernelConfig,
	})
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// kernelFlags are the flags kernel-config and kernel share.
type kernelFlags struct {
	arch      string
	src       string
	fragments stringList
	cache     string
	out       string
}

func (k *kernelFlags) register(fs *flag.FlagSet, outHelp string) {
	fs.StringVar(&k.arch, "arch", "x86_64", "guest architecture: "+strings.Join(kernelconfig.ArchNames(), ", "))
	fs.StringVar(&k.src, "src", "/usr/src/linux-source-6.1.tar.xz", "kernel source: a tarball (unpacked once into the cache) or a directory")
	fs.Var(&k.fragments, "fragment", "extra config fragment file, merged after the built-in ones (repeatable)")
	fs.StringVar(&k.cache, "cache", kernelconfig.CacheDir(), "cache for unpacked sources, build trees and kernels ($KGUEST_CACHE)")
	fs.StringVar(&k.out, "o", "", outHelp)
}

// options resolves the flags into kernelconfig options.
func (k *kernelFlags) options(ctx context.Context) (*kernelconfig.Options, error) {
	if k.out == "" {
		return nil, fmt.Errorf("-o is required: %w", errUsage)
	}
	arch, err := kernelconfig.LookupArch(k.arch)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errUsage)
	}
	o := &kernelconfig.Options{Arch: arch, CacheDir: k.cache}
	for _, p := range k.fragments {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		fr, err := kernelconfig.ParseFragment(p, f)
		f.Close()
		if err != nil {
			return nil, err
		}
		o.Extra = append(o.Extra, fr)
	}
	src, err := kernelconfig.OpenSource(ctx, k.cache, k.src, os.Stderr)
	if err != nil {
		return nil, err
	}
	o.Source = src
	return o, nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func runKernelConfig(args []string) error {
	fs := flag.NewFlagSet("kernel-config", flag.ContinueOnError)
	var k kernelFlags
	k.register(fs, "write the verified .config to this file (required)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: osbuilder kernel-config --arch ARCH [--src SRC] [--fragment FILE]... -o FILE

Starts from allnoconfig, merges the built-in fragments (and any --fragment),
resolves them with the kernel's Kconfig (olddefconfig) and verifies that
every requested option has exactly the requested value. Writes the .config
to FILE.

Example:
  osbuilder kernel-config --arch arm64 --src /usr/src/linux-source-6.1.tar.xz -o /tmp/arm64.config

Options:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return fmt.Errorf("%v: %w", err, errUsage)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: %w", fs.Args(), errUsage)
	}
	ctx, cancel := signalContext()
	defer cancel()
	o, err := k.options(ctx)
	if err != nil {
		return err
	}
	cfg, err := kernelconfig.Generate(ctx, o)
	if err != nil {
		return err
	}
	if err := os.WriteFile(k.out, cfg.Data, 0o644); err != nil {
		return err
	}
	y, _ := cfg.Values.Count()
	fmt.Fprintf(os.Stderr, "%s: Linux %s %s, config version %d: %d requested options verified, %d enabled\n",
		k.out, o.Source.Version, o.Arch.Name, cfg.Version, len(cfg.Request.Entries), y)
	return nil
}
