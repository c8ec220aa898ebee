package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/kguest/kguest/osbuilder"
)

func init() {
	register(&command{
		name:    "info",
		summary: "describe an initrd or disk image (format, files, init, provenance, DAX header)",
		run:     runInfo,
	})
}

func runInfo(args []string) error {
	fs := imgFlagSet("info", "[--json] FILE", `
Tells what an initrd or disk image is: format and compression, size, file
count, init, device nodes and the provenance recorded by osbuilder; for disks
also the partition table, the NVDIMM pfn info block (signature, checksum,
offsets, second MBR) and the filesystem type. Exits 1 when a header is
corrupt or the image is not usable as a guest image.`, `
  osbuilder info kata-containers-initrd.img
  osbuilder info --json kata-containers.img`)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want one FILE (see --help)", errUsage)
	}
	ctx, cancel := imgContext()
	defer cancel()
	info, err := osbuilder.Inspect(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(info); err != nil {
			return err
		}
	} else {
		info.Print(os.Stdout)
	}
	if len(info.Problems) > 0 {
		return errors.New(strings.Join(info.Problems, "; "))
	}
	return nil
}
