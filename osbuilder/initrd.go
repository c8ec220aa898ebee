package osbuilder

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// InitrdOptions describe an initrd build.
type InitrdOptions struct {
	Rootfs      string
	Out         string
	Compression Compression
	// Epoch clamps timestamps (SOURCE_DATE_EPOCH).
	Epoch    int64
	Progress io.Writer
}

// BuildInitrd packs a rootfs into a newc cpio archive, compressed, written
// atomically to opts.Out. The same tree and epoch always give the same bytes.
func BuildInitrd(ctx context.Context, opts InitrdOptions) error {
	if opts.Compression == "" {
		opts.Compression = Gzip
	}
	tree, err := ScanTree(opts.Rootfs, opts.Epoch)
	if err != nil {
		return err
	}
	progress(opts.Progress, "initrd: packing %d files from %s (%s)", len(tree.Entries), opts.Rootfs, opts.Compression)
	out, err := createAtomic(opts.Out)
	if err != nil {
		return err
	}
	defer out.Abort()
	bw := bufio.NewWriterSize(out, 1<<20)
	zw, err := compressor(opts.Compression, bw)
	if err != nil {
		return err
	}
	if err := WriteCPIO(ctx, zw, tree); err != nil {
		return fmt.Errorf("write %s: %w", opts.Out, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("write %s: %w", opts.Out, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", opts.Out, err)
	}
	if err := out.Commit(); err != nil {
		return err
	}
	if fi, err := os.Stat(opts.Out); err == nil {
		progress(opts.Progress, "initrd: wrote %s (%s)", opts.Out, humanSize(fi.Size()))
	}
	return nil
}

// WriteCPIO writes the tree as newc records and the trailer. Hard links
// share an inode; as in the kernel's gen_init_cpio, the content goes with
// the last name of a group and the others have size 0.
func WriteCPIO(ctx context.Context, w io.Writer, tree *Tree) error {
	rw := cpio.Newc.Writer(w)
	last := map[uint64]int{}
	for i, e := range tree.Entries {
		if e.Type() == sIFREG && e.NLink > 1 {
			last[e.Ino] = i
		}
	}
	// Content of a hard link group, read from its first name.
	src := map[uint64]string{}
	for i := range tree.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := &tree.Entries[i]
		info := cpio.Info{
			Ino:    e.Ino,
			Mode:   uint64(e.Mode),
			UID:    uint64(e.UID),
			GID:    uint64(e.GID),
			NLink:  uint64(e.NLink),
			MTime:  uint64(e.MTime),
			Rmajor: uint64(e.Rmajor),
			Rminor: uint64(e.Rminor),
			Name:   e.Path,
		}
		rec := cpio.Record{Info: info}
		switch e.Type() {
		case sIFREG:
			if e.Src != "" {
				src[e.Ino] = e.Src
			}
			if l, ok := last[e.Ino]; ok && l != i {
				break // content goes with the last name
			}
			f, err := os.Open(src[e.Ino])
			if err != nil {
				return err
			}
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return err
			}
			if fi.Size() != e.Size {
				f.Close()
				return fmt.Errorf("%s changed size while packing", src[e.Ino])
			}
			rec.ReaderAt = f // closed by the writer
			rec.FileSize = uint64(e.Size)
		case sIFLNK:
			rec.ReaderAt = strings.NewReader(e.Target)
			rec.FileSize = uint64(len(e.Target))
		}
		if err := rw.WriteRecord(rec); err != nil {
			if c, ok := rec.ReaderAt.(io.Closer); ok {
				c.Close()
			}
			return fmt.Errorf("cpio %s: %w", e.Path, err)
		}
	}
	return cpio.WriteTrailer(rw)
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
