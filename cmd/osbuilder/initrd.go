package main

import (
	"fmt"
	"os"

	"github.com/kguest/kguest/osbuilder"
)

func init() {
	register(&command{
		name:    "initrd",
		summary: "pack a rootfs into a reproducible cpio initrd",
		run:     runInitrd,
	})
}

func runInitrd(args []string) error {
	fs := imgFlagSet("initrd", "--rootfs DIR -o FILE [--compress gzip|zstd|xz|none]", `
Packs a rootfs into a newc cpio archive for the kernel's initramfs, adding
the device nodes listed in the rootfs's device manifest. The output is
reproducible: paths sorted with parents first, inodes renumbered, owners root
(unless the manifest says otherwise), timestamps clamped to
SOURCE_DATE_EPOCH (default 2024-01-01), gzip header without name or time.
The same tree always gives the same bytes.

gzip is the default because kernels built with only RD_GZIP read nothing
else; xz uses CRC32 checks as the kernel's decoder requires.`, `
  osbuilder initrd --rootfs rootfs -o kata-containers-initrd.img
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) osbuilder initrd --rootfs rootfs -o initrd.img --compress zstd`)
	var opts osbuilder.InitrdOptions
	var comp string
	fs.StringVar(&opts.Rootfs, "rootfs", "", "rootfs `directory` (from osbuilder rootfs)")
	fs.StringVar(&opts.Out, "o", "", "output `file`")
	fs.StringVar(&comp, "compress", "gzip", "`compression`: gzip, zstd, xz or none")
	quiet := fs.Bool("q", false, "no progress output")
	if err := imgParse(fs, args); err != nil {
		return err
	}
	if opts.Rootfs == "" || opts.Out == "" {
		return fmt.Errorf("%w: --rootfs and -o are required (see --help)", errUsage)
	}
	c, err := osbuilder.ParseCompression(comp)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	opts.Compression = c
	if opts.Epoch, err = imgEpoch(); err != nil {
		return err
	}
	if !*quiet {
		opts.Progress = os.Stderr
	}
	ctx, cancel := imgContext()
	defer cancel()
	return osbuilder.BuildInitrd(ctx, opts)
}
