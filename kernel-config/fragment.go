// Package kernelconfig turns config fragments into a verified kernel
// .config and builds guest kernels from it.
//
// Fragments are small files in the kernel's own .config syntax. They are
// merged (duplicates and conflicts are errors), applied on top of
// allnoconfig, resolved by the kernel's Kconfig (olddefconfig) and then
// checked: every requested symbol must come out with exactly the requested
// value, or the error names the symbol, both values and the unmet
// dependency the Kconfig files declare.
package kernelconfig

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Entry is one requested symbol value.
type Entry struct {
	// Symbol is the name without the CONFIG_ prefix.
	Symbol string
	// Value is y, m, n (for "is not set"), a quoted string or a number,
	// as written in .config.
	Value string
	// Source is "fragment:line", for error messages.
	Source string
}

func (e Entry) String() string { return FormatEntry(e.Symbol, e.Value) }

// FormatEntry renders a symbol value the way .config spells it.
func FormatEntry(sym, val string) string {
	if val == "n" {
		return "# CONFIG_" + sym + " is not set"
	}
	return "CONFIG_" + sym + "=" + val
}

// Fragment is a parsed config fragment.
type Fragment struct {
	// Name identifies the fragment in errors (e.g. common/virtio.conf).
	Name string
	// Arches is the tag that limits the architectures the fragment
	// applies to; empty means all.
	Arches  ArchTag
	Entries []Entry
}

// ArchTag is the "# arch: x86_64 arm64" or "# arch: !s390x" line of a
// fragment: a list of architectures it is for, or is not for.
type ArchTag struct {
	Only    []string
	Exclude []string
}

// Matches reports whether a fragment with this tag applies to arch.
func (t ArchTag) Matches(arch string) bool {
	for _, a := range t.Exclude {
		if a == arch {
			return false
		}
	}
	if len(t.Only) == 0 {
		return true
	}
	for _, a := range t.Only {
		if a == arch {
			return true
		}
	}
	return false
}

var (
	setRe    = regexp.MustCompile(`^CONFIG_([A-Za-z0-9_]+)=(.*)$`)
	unsetRe  = regexp.MustCompile(`^# CONFIG_([A-Za-z0-9_]+) is not set$`)
	tagRe    = regexp.MustCompile(`^#\s*arch:\s*(.*)$`)
	numberRe = regexp.MustCompile(`^(-?[0-9]+|0[xX][0-9a-fA-F]+)$`)
)

// ParseFragment reads a fragment. Lines are CONFIG_X=y|m|n|"string"|number
// or "# CONFIG_X is not set"; other comments and blank lines are ignored.
// A "# arch: ..." comment before the first entry sets the architecture
// tag. A symbol given twice in one fragment is an error.
func ParseFragment(name string, r io.Reader) (*Fragment, error) {
	f := &Fragment{Name: name}
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		var sym, val string
		switch {
		case line == "":
			continue
		case tagRe.MatchString(line):
			if len(f.Entries) > 0 {
				return nil, fmt.Errorf("%s:%d: arch tag must come before the first entry", name, ln)
			}
			if len(f.Arches.Only)+len(f.Arches.Exclude) > 0 {
				return nil, fmt.Errorf("%s:%d: second arch tag", name, ln)
			}
			t, err := parseArchTag(tagRe.FindStringSubmatch(line)[1])
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, ln, err)
			}
			f.Arches = t
			continue
		case unsetRe.MatchString(line):
			sym, val = unsetRe.FindStringSubmatch(line)[1], "n"
		case strings.HasPrefix(line, "#"):
			continue
		case setRe.MatchString(line):
			m := setRe.FindStringSubmatch(line)
			sym, val = m[1], m[2]
			if err := checkValue(val); err != nil {
				return nil, fmt.Errorf("%s:%d: CONFIG_%s: %w", name, ln, sym, err)
			}
		default:
			return nil, fmt.Errorf("%s:%d: not a config line: %q", name, ln, line)
		}
		if prev, ok := seen[sym]; ok {
			return nil, fmt.Errorf("%s:%d: CONFIG_%s already set on line %d", name, ln, sym, prev)
		}
		seen[sym] = ln
		f.Entries = append(f.Entries, Entry{Symbol: sym, Value: val, Source: fmt.Sprintf("%s:%d", name, ln)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return f, nil
}

func checkValue(v string) error {
	switch {
	case v == "y" || v == "m" || v == "n":
		return nil
	case numberRe.MatchString(v):
		return nil
	case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
		return nil
	}
	return fmt.Errorf("bad value %q (want y, m, n, a number or a quoted string)", v)
}

func parseArchTag(s string) (ArchTag, error) {
	var t ArchTag
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
		neg := strings.HasPrefix(w, "!")
		a := strings.TrimPrefix(w, "!")
		if _, ok := arches[a]; !ok {
			return t, fmt.Errorf("arch tag: unknown architecture %q", a)
		}
		if neg {
			t.Exclude = append(t.Exclude, a)
		} else {
			t.Only = append(t.Only, a)
		}
	}
	if len(t.Only) > 0 && len(t.Exclude) > 0 {
		return t, fmt.Errorf("arch tag mixes a list and exclusions: %q", s)
	}
	if len(t.Only)+len(t.Exclude) == 0 {
		return t, fmt.Errorf("empty arch tag")
	}
	return t, nil
}
