package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	kernelconfig "github.com/kguest/kguest/kernel-config"
)

func init() {
	register(&command{
		name:    "kernel",
		summary: "build (or take from the cache) the guest kernel for an architecture",
		run:     runKernel,
	})
}

func runKernel(args []string) error {
	fs := flag.NewFlagSet("kernel", flag.ContinueOnError)
	var k kernelFlags
	k.register(fs, "output directory for the kernel images and config (required)")
	jobs := fs.Int("j", 0, "parallel make jobs (0: number of CPUs)")
	every := fs.Duration("progress", 30*time.Second, "interval between progress lines while building")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: osbuilder kernel --arch ARCH [--src SRC] [--fragment FILE]... -o DIR

Generates and verifies the config (as kernel-config does), then builds the
kernel unless the cache ($KGUEST_CACHE/kernels) already has it for the same
source, architecture, fragments and toolchain. DIR receives versioned files
(e.g. vmlinux-6.1.192-kguest-c1, bzImage-..., Image-... on arm64, config-...)
and stable symlinks to them: vmlinux, bzImage (x86_64, s390x) or Image
(arm64), and config. Cross compilers (aarch64-linux-gnu-, s390x-linux-gnu-)
are used when the host is another architecture.

Example:
  nice osbuilder kernel --arch x86_64 --src /usr/src/linux-source-6.1.tar.xz -o _out/kernel/x86_64

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
	start := time.Now()
	kern, err := kernelconfig.Build(ctx, &kernelconfig.BuildOptions{
		Options: *o, OutDir: k.out, Jobs: *jobs, Progress: os.Stderr, ProgressEvery: *every,
	})
	if err != nil {
		return err
	}
	how := "built"
	if kern.Cached {
		how = "from cache"
	}
	var names []string
	for stable := range kern.Files {
		names = append(names, stable)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "kernel %s (%s, %s, %d options enabled) in %s:\n", kern.Name, kern.Arch, how, kern.Enabled, time.Since(start).Round(time.Millisecond))
	for _, n := range names {
		st, err := os.Stat(kern.Path(n))
		if err != nil {
			return err
		}
		fmt.Printf("%s\t%d\n", kern.Path(n), st.Size())
	}
	return nil
}
