package kernelconfig

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Mismatch is a requested symbol that did not come out as asked.
type Mismatch struct {
	Entry
	Got string
	// Unmet lists dependencies the Kconfig files declare that are not
	// met in the resolved config.
	Unmet []string
	// Undefined is true when no Kconfig file (for this architecture)
	// defines the symbol.
	Undefined bool
}

func (m Mismatch) String() string {
	s := fmt.Sprintf("CONFIG_%s: asked for %s, got %s (from %s)", m.Symbol, m.Value, m.Got, m.Source)
	switch {
	case m.Undefined:
		s += "; the kernel's Kconfig does not define it for this architecture"
	case len(m.Unmet) > 0:
		s += "; unmet dependency: " + strings.Join(m.Unmet, "; ")
	}
	return s
}

// VerifyError lists every requested symbol that did not survive.
type VerifyError struct {
	Arch       string
	Mismatches []Mismatch
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requested option(s) not in the resolved %s config:", len(e.Mismatches), e.Arch)
	for _, m := range e.Mismatches {
		b.WriteString("\n  ")
		b.WriteString(m.String())
	}
	return b.String()
}

// Allowlist excuses named symbols from verification, per architecture.
type Allowlist struct {
	all    map[string]bool
	byArch map[string]map[string]bool
}

// ParseAllowlist reads lines of "CONFIG_X [arch...]  # reason". A line
// without architectures applies to all.
func ParseAllowlist(name string, r io.Reader) (*Allowlist, error) {
	a := &Allowlist{all: map[string]bool{}, byArch: map[string]map[string]bool{}}
	sc := bufio.NewScanner(r)
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		sym, ok := strings.CutPrefix(f[0], "CONFIG_")
		if !ok || !isSymbol(sym) {
			return nil, fmt.Errorf("%s:%d: want CONFIG_NAME, got %q", name, ln, f[0])
		}
		if len(f) == 1 {
			a.all[sym] = true
			continue
		}
		for _, arch := range f[1:] {
			if _, ok := arches[arch]; !ok {
				return nil, fmt.Errorf("%s:%d: unknown architecture %q", name, ln, arch)
			}
			if a.byArch[arch] == nil {
				a.byArch[arch] = map[string]bool{}
			}
			a.byArch[arch][sym] = true
		}
	}
	return a, sc.Err()
}

// Allows reports whether sym (exact name, without CONFIG_) is excused
// on arch.
func (a *Allowlist) Allows(arch, sym string) bool {
	if a == nil {
		return false
	}
	return a.all[sym] || a.byArch[arch][sym]
}

// Verify checks that every requested symbol has exactly the requested
// value in cfg. idx, when not nil, explains dropped symbols.
func Verify(req *Request, cfg DotConfig, idx KconfigIndex, allow *Allowlist) error {
	var ms []Mismatch
	for _, e := range req.Entries {
		got := cfg.Value(e.Symbol)
		if sameValue(e.Value, got) || allow.Allows(req.Arch, e.Symbol) {
			continue
		}
		m := Mismatch{Entry: e, Got: got}
		if idx != nil {
			unmet, ok := idx.Unmet(e.Symbol, cfg)
			m.Unmet, m.Undefined = unmet, !ok
		}
		ms = append(ms, m)
	}
	if len(ms) == 0 {
		return nil
	}
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].Symbol < ms[j].Symbol })
	return &VerifyError{Arch: req.Arch, Mismatches: ms}
}

func sameValue(want, got string) bool {
	if want == got {
		return true
	}
	// Kconfig normalises hex case.
	if strings.HasPrefix(want, "0x") || strings.HasPrefix(want, "0X") {
		return strings.EqualFold(want, got)
	}
	return false
}
