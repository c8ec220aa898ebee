// Package rootfsbuilder lays out a guest rootfs tree for kata-agent: the
// directories the agent needs, the agent as init (or as a systemd service),
// extra files, kernel modules and an optional debug shell. It never needs
// root: device nodes are recorded in a manifest (DevicesFile) that the
// packers turn into archive records or filesystem inodes.
package rootfsbuilder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ProvenanceFile records how a rootfs was built.
const ProvenanceFile = "var/lib/osbuilder/osbuilder.yaml"

// Paths of the agent in the rootfs.
const (
	AgentInitPath    = "sbin/init"
	AgentServicePath = "usr/bin/kata-agent"
	systemdUnitDir   = "usr/lib/systemd/system"
)

// Extra is a file or directory copied into the rootfs.
type Extra struct {
	Src string // on the host
	Dst string // in the rootfs (absolute or relative to its root)
}

// ParseExtra parses "SRC:DST".
func ParseExtra(s string) (Extra, error) {
	i := strings.LastIndex(s, ":")
	if i <= 0 || i == len(s)-1 {
		return Extra{}, fmt.Errorf("--extra %q: want SRC:DST", s)
	}
	return Extra{Src: s[:i], Dst: s[i+1:]}, nil
}

func (e Extra) String() string { return e.Src + ":" + e.Dst }

// Options describe a rootfs.
type Options struct {
	Agent      string // path of the static kata-agent binary
	Out        string // rootfs directory to create
	Force      bool   // replace Out if it exists and is not empty
	AgentInit  bool   // agent is /sbin/init (and /init); else a systemd service
	Extras     []Extra
	Modules    string // a /lib/modules/<version> tree, copied as such
	DebugShell bool   // add the u-root based debug shell as /bin/sh
	Arch       Arch   // target architecture; "" means the host's

	// SourceDateEpoch is recorded in the provenance file and used by the
	// packers; 0 means DefaultSourceDateEpoch.
	SourceDateEpoch int64
	BuilderVersion  string
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

// DefaultSourceDateEpoch is used when SOURCE_DATE_EPOCH is not set, so that
// builds are reproducible by default (2024-01-01T00:00:00Z).
const DefaultSourceDateEpoch = 1704067200

// Provenance is the content of ProvenanceFile.
type Provenance struct {
	Builder         string          `yaml:"builder"`
	BuilderVersion  string          `yaml:"builder_version"`
	Arch            string          `yaml:"arch"`
	Agent           AgentProvenance `yaml:"agent"`
	AgentInit       bool            `yaml:"agent_init"`
	Options         ProvOptions     `yaml:"options"`
	SourceDateEpoch int64           `yaml:"source_date_epoch"`
}

// AgentProvenance identifies the agent binary.
type AgentProvenance struct {
	Path    string `yaml:"path"`
	Version string `yaml:"version"`
	SHA256  string `yaml:"sha256"`
}

// ProvOptions records the options a rootfs was built with.
type ProvOptions struct {
	Extras     []string `yaml:"extras,omitempty"`
	Modules    string   `yaml:"modules,omitempty"`
	DebugShell bool     `yaml:"debug_shell"`
}

// ParseProvenance decodes a provenance file.
func ParseProvenance(b []byte) (*Provenance, error) {
	var p Provenance
	if err := yaml.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("parse provenance: %w", err)
	}
	return &p, nil
}

// SourceDateEpochFromEnv returns $SOURCE_DATE_EPOCH, or def when unset.
func SourceDateEpochFromEnv(def int64) (int64, error) {
	s, ok := os.LookupEnv("SOURCE_DATE_EPOCH")
	if !ok || s == "" {
		return def, nil
	}
	var v int64
	if _, err := fmt.Sscan(s, &v); err != nil || v < 0 {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a non-negative integer", s)
	}
	return v, nil
}

func (o *Options) progress(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// Build lays out the rootfs described by opts. The tree is assembled in a
// temporary sibling of opts.Out and renamed into place when complete.
func Build(ctx context.Context, opts Options) (err error) {
	if opts.Agent == "" {
		return errors.New("no agent binary given (--agent)")
	}
	if opts.Out == "" {
		return errors.New("no output directory given (-o)")
	}
	arch, err := ParseArch(string(opts.Arch))
	if err != nil {
		return err
	}
	opts.Arch = arch
	if opts.SourceDateEpoch == 0 {
		opts.SourceDateEpoch = DefaultSourceDateEpoch
	}
	st, err := os.Stat(opts.Agent)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("agent %s is not a regular file", opts.Agent)
	}
	if err := CheckStaticELF(opts.Agent, arch); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := checkOut(opts.Out, opts.Force); err != nil {
		return err
	}

	out := filepath.Clean(opts.Out)
	tmp, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return fmt.Errorf("create rootfs: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}

	opts.progress("rootfs: laying out directories in %s", out)
	if err := layout(tmp); err != nil {
		return err
	}

	agentDst := AgentInitPath
	if !opts.AgentInit {
		agentDst = AgentServicePath
	}
	opts.progress("rootfs: installing agent %s as /%s", opts.Agent, agentDst)
	sum, err := copyFile(opts.Agent, filepath.Join(tmp, agentDst), 0o755)
	if err != nil {
		return fmt.Errorf("install agent: %w", err)
	}
	if opts.AgentInit {
		if err := os.Symlink("/"+AgentInitPath, filepath.Join(tmp, "init")); err != nil {
			return err
		}
	} else if err := writeUnits(tmp); err != nil {
		return err
	}

	for _, e := range opts.Extras {
		dst, err := inRoot(tmp, e.Dst)
		if err != nil {
			return fmt.Errorf("--extra %s: %w", e, err)
		}
		opts.progress("rootfs: copying %s to /%s", e.Src, e.Dst)
		if err := copyTree(e.Src, dst); err != nil {
			return fmt.Errorf("--extra %s: %w", e, err)
		}
	}
	if opts.Modules != "" {
		dst := filepath.Join(tmp, "lib/modules", filepath.Base(filepath.Clean(opts.Modules)))
		opts.progress("rootfs: copying modules %s to /lib/modules/%s", opts.Modules, filepath.Base(dst))
		if err := copyTree(opts.Modules, dst); err != nil {
			return fmt.Errorf("--modules: %w", err)
		}
	}
	if opts.DebugShell {
		opts.progress("rootfs: building the debug shell for %s (go build, cached after the first run)", arch)
		if err := InstallDebugShell(ctx, tmp, arch, opts.Progress); err != nil {
			return fmt.Errorf("debug shell: %w", err)
		}
	}

	if err := writeFileWith(filepath.Join(tmp, DevicesFile), 0o644, func(w io.Writer) error {
		return WriteDevices(w, DefaultDevices)
	}); err != nil {
		return err
	}
	prov := Provenance{
		Builder:        "osbuilder",
		BuilderVersion: opts.BuilderVersion,
		Arch:           string(arch),
		Agent: AgentProvenance{
			Path:    "/" + agentDst,
			Version: agentVersion(ctx, opts.Agent, arch),
			SHA256:  sum,
		},
		AgentInit:       opts.AgentInit,
		Options:         ProvOptions{Modules: opts.Modules, DebugShell: opts.DebugShell},
		SourceDateEpoch: opts.SourceDateEpoch,
	}
	for _, e := range opts.Extras {
		prov.Options.Extras = append(prov.Options.Extras, e.String())
	}
	pb, err := yaml.Marshal(&prov)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, ProvenanceFile), pb, 0o644); err != nil {
		return err
	}

	if err := Check(tmp, arch); err != nil {
		return err
	}

	if err := replaceDir(tmp, out); err != nil {
		return err
	}
	opts.progress("rootfs: done: %s", out)
	return nil
}

// Check verifies a rootfs: its init is an executable and, if the agent is
// init, a static binary for arch.
func Check(root string, arch Arch) error {
	initPath := filepath.Join(root, AgentInitPath)
	fi, err := os.Stat(initPath)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(root, AgentServicePath)); serr == nil && os.IsNotExist(err) {
			// A service-mode rootfs gets its init from the distro tree layered on it.
			return nil
		}
		return fmt.Errorf("check rootfs: no init: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("check rootfs: /%s is not an executable file (mode %s)", AgentInitPath, fi.Mode())
	}
	if _, err := os.Stat(filepath.Join(root, AgentServicePath)); err == nil {
		return nil // distro init; not ours to check
	}
	if err := CheckStaticELF(initPath, arch); err != nil {
		return fmt.Errorf("check rootfs: init: %w", err)
	}
	return nil
}

func checkOut(out string, force bool) error {
	ents, err := os.ReadDir(out)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output %s: %w", out, err)
	}
	if len(ents) > 0 && !force {
		return fmt.Errorf("output directory %s exists and is not empty (use --force to replace it)", out)
	}
	return nil
}

// replaceDir renames tmp to out, moving a previous out aside first.
func replaceDir(tmp, out string) error {
	if _, err := os.Lstat(out); err == nil {
		old := tmp + ".old"
		if err := os.Rename(out, old); err != nil {
			return fmt.Errorf("replace %s: %w", out, err)
		}
		if err := os.Rename(tmp, out); err != nil {
			_ = os.Rename(old, out)
			return fmt.Errorf("replace %s: %w", out, err)
		}
		return os.RemoveAll(old)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("create %s: %w", out, err)
	}
	return nil
}

var layoutDirs = []struct {
	path string
	mode os.FileMode
}{
	{"bin", 0o755}, {"dev", 0o755}, {"etc", 0o755}, {"lib", 0o755}, {"lib/modules", 0o755},
	{"proc", 0o555}, {"run", 0o755}, {"sbin", 0o755}, {"sys", 0o555},
	{"tmp", 0o1777}, {"usr", 0o755}, {"usr/bin", 0o755}, {"var", 0o755},
	{"var/lib", 0o755}, {"var/lib/osbuilder", 0o755}, {"var/tmp", 0o1777},
}

func layout(root string) error {
	for _, d := range layoutDirs {
		p := filepath.Join(root, d.path)
		if err := os.Mkdir(p, d.mode); err != nil {
			return err
		}
		// Mkdir applies the umask; sticky bits and exact modes need chmod.
		if err := os.Chmod(p, d.mode|modeExtra(d.mode)); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(root, "etc/resolv.conf"), nil, 0o644)
}

func modeExtra(m os.FileMode) os.FileMode {
	if m&0o1000 != 0 {
		return os.ModeSticky
	}
	return 0
}

const agentUnit = `[Unit]
Description=Kata Containers Agent
Documentation=https://github.com/kata-containers/kata-containers
Wants=kata-containers.target

[Service]
Type=simple
ExecStart=/usr/bin/kata-agent
StandardOutput=tty
LimitNOFILE=1048576
FailureAction=poweroff
OOMScoreAdjust=-997
`

const kataTarget = `[Unit]
Description=Kata Containers Agent Target
Requires=basic.target
Requires=kata-agent.service
Conflicts=rescue.service rescue.target
After=basic.target rescue.service rescue.target
AllowIsolate=yes
`

func writeUnits(root string) error {
	dir := filepath.Join(root, systemdUnitDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "kata-agent.service"), []byte(agentUnit), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "kata-containers.target"), []byte(kataTarget), 0o644); err != nil {
		return err
	}
	etc := filepath.Join(root, "etc/systemd/system")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	return os.Symlink("/"+systemdUnitDir+"/kata-containers.target", filepath.Join(etc, "default.target"))
}

// inRoot resolves dst (a path inside the rootfs) under root, refusing to
// escape it.
func inRoot(root, dst string) (string, error) {
	c := path.Clean("/" + dst)
	if c == "/" {
		return "", errors.New("destination is the rootfs itself")
	}
	return filepath.Join(root, filepath.FromSlash(c[1:])), nil
}

// agentVersion asks the agent for its version when it runs on this host,
// else reads the version stamped into its Go build info.
func agentVersion(ctx context.Context, agent string, arch Arch) string {
	if string(arch) == runtime.GOARCH {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, agent, "--version")
		cmd.Stdout = &out
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
		if err := cmd.Run(); err == nil {
			if line, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n"); line != "" {
				return strings.TrimSpace(line)
			}
		}
	}
	return VersionFromBuildInfo(agent)
}

// VersionFromBuildInfo reads a Go binary's version: the value stamped with
// -X .../internal/version.Version=, else the main module version.
func VersionFromBuildInfo(bin string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "unknown"
	}
	for _, s := range bi.Settings {
		if s.Key != "-ldflags" {
			continue
		}
		for _, f := range strings.Fields(s.Value) {
			if _, v, ok := strings.Cut(f, "internal/version.Version="); ok {
				return strings.Trim(v, `'"`)
			}
		}
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	return "unknown"
}

func writeFileWith(p string, mode os.FileMode, fn func(io.Writer) error) error {
	var b bytes.Buffer
	if err := fn(&b); err != nil {
		return err
	}
	return os.WriteFile(p, b.Bytes(), mode)
}

// copyFile copies a regular file and returns the hex SHA-256 of its content.
func copyFile(src, dst string, mode os.FileMode) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	// O_CREATE honours the umask; the rootfs needs the exact mode.
	if err := os.Chmod(dst, mode); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyTree copies src (file, symlink or directory) to dst, keeping modes,
// symlinks and hard links within src.
func copyTree(src, dst string) error {
	links := map[[2]uint64]string{}
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		// An extra replaces a file of the layout (e.g. /etc/resolv.conf).
		if old, err := os.Lstat(target); err == nil && !old.IsDir() {
			if err := os.Remove(target); err != nil {
				return err
			}
		}
		switch m := fi.Mode(); {
		case m.IsDir():
			if err := os.Mkdir(target, 0o755); err != nil && !os.IsExist(err) {
				return err
			}
			return os.Chmod(target, m.Perm()|m&(os.ModeSticky|os.ModeSetgid|os.ModeSetuid))
		case m&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case m.IsRegular():
			if key, ok := inodeKey(fi); ok {
				if first, seen := links[key]; seen {
					return os.Link(first, target)
				}
				links[key] = target
			}
			_, err := copyFile(p, target, m.Perm()|m&(os.ModeSticky|os.ModeSetgid|os.ModeSetuid))
			return err
		default:
			return fmt.Errorf("%s: unsupported file type %s (device nodes go in /%s)", p, m.Type(), DevicesFile)
		}
	})
}
