package main

import (
	"fmt"
	"os"

	"github.com/kguest/kguest/osbuilder"
)

func init() {
	register(&command{
		name:    "image",
		summary: "make a DAX-mappable disk image (ext4 or erofs) from a rootfs",
		run:     runImage,
	})
}

func runImage(args []string) error {
	fs := imgFlagSet("image", "--rootfs DIR -o FILE [OPTIONS]", `
Makes a disk image from a rootfs without root or loop devices. Layout (as
Kata's runtime and guest kernels expect it for a virtual NVDIMM with DAX):

  0        MBR, one Linux partition from 3 MiB to the end
  4 KiB    NVDIMM pfn info block (NVDIMM_PFN_INFO, mode RAM, dataoff 2 MiB)
  2 MiB    second MBR (start of the pmem data), partition 1 MiB into it
  3 MiB    the filesystem (mkfs.ext4 -d / mkfs.erofs), to the end

The size is computed from the tree (plus --free) and rounded up to --align.
--no-dax writes a plain MBR disk with the partition at 1 MiB. The guest boots
it with root=/dev/pmem0p1 rootflags=dax (NVDIMM) or root=/dev/vda1.
Reproducible with SOURCE_DATE_EPOCH (UUIDs and hash seed derive from the tree).`, `
  osbuilder image --rootfs rootfs -o kata-containers.img
  osbuilder image --rootfs rootfs -o rootfs.img --fs erofs --align 2
  osbuilder image --rootfs rootfs -o disk.qcow2 --no-dax --format qcow2 --free 64`)
	var opts osbuilder.ImageOptions
	var fsType, format string
	fs.StringVar(&opts.Rootfs, "rootfs", "", "rootfs `directory` (from osbuilder rootfs)")
	fs.StringVar(&opts.Out, "o", "", "output `file`")
	fs.StringVar(&fsType, "fs", "ext4", "`filesystem`: ext4 or erofs")
	fs.Int64Var(&opts.AlignMiB, "align", 128, "round the image size up to a multiple of this many `MiB`")
	fs.BoolVar(&opts.NoDAX, "no-dax", false, "plain MBR disk without the NVDIMM pfn info block")
	fs.StringVar(&format, "format", "raw", "image `format`: raw or qcow2")
	fs.Int64Var(&opts.FreeMiB, "free", 0, "free space to add to the filesystem, in `MiB`")
	quiet := fs.Bool("q", false, "no progress output")
	if err := imgParse(fs, args); err != nil {
		return err
	}
	if opts.Rootfs == "" || opts.Out == "" {
		return fmt.Errorf("%w: --rootfs and -o are required (see --help)", errUsage)
	}
	switch osbuilder.Filesystem(fsType) {
	case osbuilder.Ext4, osbuilder.EROFS:
		opts.FS = osbuilder.Filesystem(fsType)
	default:
		return fmt.Errorf("%w: --fs %q: want ext4 or erofs", errUsage, fsType)
	}
	switch osbuilder.ImageFormat(format) {
	case osbuilder.Raw, osbuilder.Qcow2:
		opts.Format = osbuilder.ImageFormat(format)
	default:
		return fmt.Errorf("%w: --format %q: want raw or qcow2", errUsage, format)
	}
	if opts.AlignMiB <= 0 || opts.FreeMiB < 0 {
		return fmt.Errorf("%w: --align must be positive and --free not negative", errUsage)
	}
	var err error
	if opts.Epoch, err = imgEpoch(); err != nil {
		return err
	}
	if !*quiet {
		opts.Progress = os.Stderr
	}
	ctx, cancel := imgContext()
	defer cancel()
	return osbuilder.BuildImage(ctx, opts)
}
