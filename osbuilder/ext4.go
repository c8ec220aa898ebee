package osbuilder

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
)

// Ext4Need is what an ext4 filesystem needs to hold a tree.
type Ext4Need struct {
	Bytes  int64 // filesystem size to ask for, before image alignment
	Inodes int64 // inodes the tree uses, with reserve
}

const (
	ext4InodeSize  = 256
	ext4InodeRatio = 16384 // bytes per inode, mke2fs's default
	ext4JournalMiB = 4     // the smallest journal (1024 blocks)
)

// EstimateExt4 computes the filesystem size for a tree from its content:
// data blocks, directory blocks, the inode table (at mke2fs's inode ratio),
// the journal, per-group metadata, a reserve, and freeMiB on top.
func EstimateExt4(t *Tree, freeMiB int64) Ext4Need {
	var data int64
	dirBytes := map[string]int64{"": 24} // "." and ".." of the root
	for _, e := range t.Entries {
		dirBytes[pathDir(e.Path)] += int64(8+len(path.Base(e.Path))+3) &^ 3
		switch e.Type() {
		case sIFREG:
			if e.LinkOf == "" {
				b := (e.Size + blockSize - 1) / blockSize
				data += b + b/300 // extent tree blocks for fragmented files
			}
		case sIFLNK:
			if len(e.Target) >= 60 { // longer targets do not fit in the inode
				data++
			}
		case sIFDIR:
			dirBytes[e.Path] += 24
		}
	}
	for _, n := range dirBytes {
		b := (n + blockSize - 1) / blockSize
		if b > 1 {
			b++ // htree index block
		}
		data += b
	}
	data += 4 // lost+found
	inodes := int64(len(t.Entries)) + 11 + 1
	inodes += inodes/4 + 64

	content := data*blockSize + ext4JournalMiB*MiB
	// The inode table takes 1/64 of the filesystem at 256-byte inodes and
	// a 16 KiB ratio; group metadata (bitmaps, descriptors, backups) under
	// 1%. Solve size = content + size/64 + size/100, then reserve 5%.
	size := content * 6400 / (6400 - 100 - 64)
	size += size / 20
	if minIT := inodes * ext4InodeRatio; size < minIT {
		size = minIT
	}
	size += freeMiB * MiB
	return Ext4Need{Bytes: roundUp(size, MiB), Inodes: inodes}
}

// makeExt4 makes the filesystem inside img at lay.FSOffset with mkfs.ext4 -d,
// then adds device nodes and normalizes owners and times with debugfs
// (mkfs.ext4 -d copies them from the host files).
func makeExt4(ctx context.Context, img string, t *Tree, lay ImageLayout, need Ext4Need, prog io.Writer) error {
	if err := needTool("mkfs.ext4", "e2fsprogs"); err != nil {
		return err
	}
	if err := needTool("debugfs", "e2fsprogs"); err != nil {
		return err
	}
	digest := t.Digest()
	uuid := fsUUID(digest, "ext4 uuid")
	env := []string{
		"E2FSPROGS_FAKE_TIME=" + strconv.FormatInt(t.Epoch, 10),
		"MKE2FS_SYNC=0",
		"TZ=UTC",
	}
	blocks := lay.FSSize / blockSize
	inodes := max(need.Inodes, lay.FSSize/ext4InodeRatio)
	args := []string{
		"-q", "-F", "-t", "ext4", "-T", "default",
		"-b", strconv.Itoa(blockSize), "-I", strconv.Itoa(ext4InodeSize),
		"-N", strconv.FormatInt(inodes, 10),
		"-m", "0", "-J", "size=" + strconv.Itoa(ext4JournalMiB),
		"-U", uuid,
		"-E", fmt.Sprintf("root_owner=0:0,hash_seed=%s,offset=%d,nodiscard,lazy_itable_init=1", fsUUID(digest, "ext4 hash seed"), lay.FSOffset),
		"-d", t.Root,
		img, strconv.FormatInt(blocks, 10),
	}
	progress(prog, "image: mkfs.ext4 -d %s (%d blocks, %d inodes)", t.Root, blocks, inodes)
	if err := run(ctx, env, toolPath("mkfs.ext4"), args...); err != nil {
		return fmt.Errorf("make ext4 (no space? the size estimate was %s): %w", humanSize(need.Bytes), err)
	}
	script, err := debugfsScript(t)
	if err != nil {
		return err
	}
	progress(prog, "image: debugfs: adding device nodes, owners and timestamps")
	return runDebugfs(ctx, env, fmt.Sprintf("%s?offset=%d", img, lay.FSOffset), script)
}

// debugfsScript creates the manifest's device nodes and sets every inode's
// owner and times to the normalized tree's.
func debugfsScript(t *Tree) ([]byte, error) {
	var b bytes.Buffer
	for _, e := range t.Entries {
		if !e.Device {
			continue
		}
		q, err := dq("/" + pathDir(e.Path))
		if err != nil {
			return nil, err
		}
		n, err := dq(path.Base(e.Path))
		if err != nil {
			return nil, err
		}
		if _, err := os.Lstat(t.Root + "/" + e.Path); err == nil {
			fmt.Fprintf(&b, "rm %s\n", mustDQ("/"+e.Path))
		}
		typ := "c"
		if e.Type() == sIFBLK {
			typ = "b"
		}
		fmt.Fprintf(&b, "cd %s\nmknod %s %s %d %d\ncd /\nsif %s mode 0%o\n", q, n, typ, e.Rmajor, e.Rminor, mustDQ("/"+e.Path), e.Mode)
	}
	setTimes := func(p string, uid, gid uint32, mtime int64) {
		fmt.Fprintf(&b, "sif %s uid %d\nsif %s gid %d\n", p, uid, p, gid)
		for _, f := range []string{"atime", "mtime", "ctime", "crtime"} {
			fmt.Fprintf(&b, "sif %s %s @%d\nsif %s %s_extra 0\n", p, f, mtime, p, f)
		}
	}
	setTimes("/", 0, 0, t.Epoch)
	for _, e := range t.Entries {
		p, err := dq("/" + e.Path)
		if err != nil {
			return nil, err
		}
		setTimes(p, e.UID, e.GID, e.MTime)
	}
	return b.Bytes(), nil
}

// dq quotes a path for debugfs' command parser.
func dq(p string) (string, error) {
	if strings.ContainsAny(p, "\"\n\\") {
		return "", fmt.Errorf("%q: names with quotes, backslashes or newlines are not supported in ext4 images", p)
	}
	return `"` + p + `"`, nil
}

func mustDQ(p string) string { s, _ := dq(p); return s }

// runDebugfs runs a script; debugfs exits 0 even when commands fail, so any
// error output fails the build.
func runDebugfs(ctx context.Context, env []string, dev string, script []byte) error {
	cmd := exec.CommandContext(ctx, toolPath("debugfs"), "-w", "-f", "-", dev)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = bytes.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debugfs: %w: %s", err, stderr.String())
	}
	var bad []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			bad = append(bad, l)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("debugfs: %s", strings.Join(bad, "; "))
	}
	return nil
}
