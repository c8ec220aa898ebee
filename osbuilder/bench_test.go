package osbuilder

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	rootfsbuilder "github.com/kguest/kguest/rootfs-builder"
)

// benchRootfs builds a rootfs around the project's agent (bin/kata-agent)
// or, before it is built, busybox-static.
func benchRootfs(b *testing.B, debugShell bool) string {
	b.Helper()
	agent := ""
	for _, p := range []string{"../bin/kata-agent", "/bin/busybox"} {
		if rootfsbuilder.CheckStaticELF(p, rootfsbuilder.Arch(runtime.GOARCH)) == nil {
			agent, _ = filepath.Abs(p)
			break
		}
	}
	if agent == "" {
		b.Skip("needs bin/kata-agent or busybox-static")
	}
	if debugShell {
		if _, err := exec.LookPath("go"); err != nil {
			b.Skip("the debug shell needs the Go toolchain")
		}
	}
	out := filepath.Join(b.TempDir(), "rootfs")
	if err := rootfsbuilder.Build(context.Background(), rootfsbuilder.Options{
		Agent: agent, Out: out, AgentInit: true, DebugShell: debugShell,
	}); err != nil {
		b.Fatal(err)
	}
	b.Logf("agent %s", agent)
	return out
}

func reportSize(b *testing.B, path string) {
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "MiB")
}

// BenchmarkInitrd: build time and size of the initrd of an agent-only
// rootfs and of one with the debug shell.
func BenchmarkInitrd(b *testing.B) {
	for _, rf := range []struct {
		name  string
		shell bool
	}{{"agent", false}, {"agent+shell", true}} {
		b.Run(rf.name, func(b *testing.B) {
			root := benchRootfs(b, rf.shell)
			for _, c := range []Compression{Gzip, Zstd, XZ, None} {
				if c == XZ && rf.shell {
					continue // xz takes ~10 s of CPU per build; once is enough
				}
				b.Run(string(c), func(b *testing.B) {
					out := filepath.Join(b.TempDir(), "initrd")
					for b.Loop() {
						if err := BuildInitrd(context.Background(), InitrdOptions{Rootfs: root, Out: out, Compression: c, Epoch: testEpoch}); err != nil {
							b.Fatal(err)
						}
					}
					reportSize(b, out)
				})
			}
		})
	}
}

// BenchmarkImage: build time of the DAX disk image; the size reported is
// the data written (allocated blocks), the file is --align sized.
func BenchmarkImage(b *testing.B) {
	for _, rf := range []struct {
		name  string
		shell bool
	}{{"agent", false}, {"agent+shell", true}} {
		b.Run(rf.name, func(b *testing.B) {
			root := benchRootfs(b, rf.shell)
			for _, fs := range []Filesystem{Ext4, EROFS} {
				if toolPath("mkfs."+string(fs)) == "" {
					continue
				}
				b.Run(string(fs), func(b *testing.B) {
					out := filepath.Join(b.TempDir(), "image")
					for b.Loop() {
						if err := BuildImage(context.Background(), ImageOptions{Rootfs: root, Out: out, FS: fs, Epoch: testEpoch}); err != nil {
							b.Fatal(err)
						}
					}
					reportSize(b, out)
					if st, err := os.Stat(out); err == nil {
						if sys, ok := st.Sys().(*syscall.Stat_t); ok {
							b.ReportMetric(float64(sys.Blocks*512)/(1<<20), "MiB-used")
						}
					}
				})
			}
		})
	}
}
