package kernelconfig

import (
	"fmt"
	"sort"
	"strings"
)

// Request is the merged set of symbols asked for, for one architecture.
type Request struct {
	Arch    string
	Entries []Entry // in fragment order
	bySym   map[string]int
}

// Lookup returns the requested entry for sym.
func (r *Request) Lookup(sym string) (Entry, bool) {
	i, ok := r.bySym[sym]
	if !ok {
		return Entry{}, false
	}
	return r.Entries[i], true
}

// Fragment renders the request as one .config fragment, for
// KCONFIG_ALLCONFIG.
func (r *Request) Fragment() string {
	var b strings.Builder
	for _, e := range r.Entries {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Merge combines the fragments that apply to arch. A symbol set in two
// fragments is an error, naming both, whether the values agree
// (duplicate) or not (conflict): each option has one home.
func Merge(arch string, frags []*Fragment) (*Request, error) {
	r := &Request{Arch: arch, bySym: map[string]int{}}
	var errs []string
	for _, f := range frags {
		if !f.Arches.Matches(arch) {
			continue
		}
		for _, e := range f.Entries {
			if i, ok := r.bySym[e.Symbol]; ok {
				prev := r.Entries[i]
				kind := "duplicate"
				if prev.Value != e.Value {
					kind = "conflict"
				}
				errs = append(errs, fmt.Sprintf("%s: CONFIG_%s: %s (%s) and %s (%s)",
					kind, e.Symbol, prev.Source, prev.Value, e.Source, e.Value))
				continue
			}
			r.bySym[e.Symbol] = len(r.Entries)
			r.Entries = append(r.Entries, e)
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("merge fragments for %s:\n  %s", arch, strings.Join(errs, "\n  "))
	}
	return r, nil
}
