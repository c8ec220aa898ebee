package kernelconfig

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// data holds the fragments, the config version and the allowlists.
//
//go:embed VERSION fragments allowlist
var data embed.FS

// ConfigVersion is the version of the fragment set (kernel-config/VERSION).
// It is part of every artifact's name; bump it when fragments change in a
// way users should see.
func ConfigVersion() int {
	b, err := data.ReadFile("VERSION")
	if err != nil {
		panic(err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		panic(fmt.Sprintf("kernel-config/VERSION: %v", err))
	}
	return v
}

// Fragments returns the built-in fragments for arch: fragments/common/*.conf
// then fragments/<arch>/*.conf, each directory in name order, before arch
// tags are applied (Merge applies them).
func Fragments(arch string) ([]*Fragment, error) {
	var out []*Fragment
	for _, dir := range []string{"fragments/common", "fragments/" + arch} {
		ents, err := fs.ReadDir(data, dir)
		if err != nil {
			return nil, fmt.Errorf("fragments: %w", err)
		}
		var names []string
		for _, e := range ents {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			p := path.Join(dir, n)
			f, err := data.Open(p)
			if err != nil {
				return nil, err
			}
			fr, err := ParseFragment(strings.TrimPrefix(p, "fragments/"), f)
			f.Close()
			if err != nil {
				return nil, err
			}
			out = append(out, fr)
		}
	}
	return out, nil
}

// BuiltinAllowlist returns the allowlist for kernel version kver
// ("6.1.192" uses allowlist/6.1), or an empty one.
func BuiltinAllowlist(kver string) (*Allowlist, string, error) {
	mm := majorMinor(kver)
	name := "allowlist/" + mm
	b, err := data.ReadFile(name)
	if err != nil {
		a, _ := ParseAllowlist(name, strings.NewReader(""))
		return a, "", nil
	}
	a, err := ParseAllowlist(name, strings.NewReader(string(b)))
	return a, string(b), err
}

func majorMinor(kver string) string {
	p := strings.SplitN(kver, ".", 3)
	if len(p) < 2 {
		return kver
	}
	return p[0] + "." + p[1]
}
