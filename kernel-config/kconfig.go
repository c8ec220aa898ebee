package kernelconfig

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"
)

// KconfigEntry is what the Kconfig files say about one definition of a
// symbol: where it is, and the conditions under which it can be set
// (its own "depends on" lines plus those of enclosing if and menu
// blocks).
type KconfigEntry struct {
	File    string
	Line    int
	Depends []string
}

// KconfigIndex maps symbols to their definitions. It is a line-level
// reading of the Kconfig language, enough to explain why a symbol was
// dropped, not a full Kconfig implementation.
type KconfigIndex map[string][]KconfigEntry

// IndexKconfig reads every Kconfig file in the kernel source tree at src.
// Definitions under arch/ are kept only for srcArch.
func IndexKconfig(src, srcArch string) (KconfigIndex, error) {
	idx := KconfigIndex{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			switch rel {
			case "Documentation", "tools", "scripts", "samples", ".git":
				return filepath.SkipDir
			}
			if parts := strings.Split(rel, string(filepath.Separator)); len(parts) == 2 && parts[0] == "arch" && parts[1] != srcArch {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(d.Name(), "Kconfig") {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return idx.parse(rel, f)
	})
	if err != nil {
		return nil, fmt.Errorf("index Kconfig in %s: %w", src, err)
	}
	return idx, nil
}

type block struct {
	kind  string // if, menu, choice
	conds []string
}

func (idx KconfigIndex) parse(name string, f *os.File) error {
	var (
		stack      []block
		cur        *KconfigEntry // entry or menu whose attributes we are reading
		sym        string
		inHelp     bool
		helpIndent int
	)
	flush := func() {
		if cur != nil && sym != "" {
			idx[sym] = append(idx[sym], *cur)
		}
		cur, sym = nil, ""
	}
	outer := func() []string {
		var c []string
		for _, b := range stack {
			c = append(c, b.conds...)
		}
		return c
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	ln := 0
	for sc.Scan() {
		ln++
		raw := sc.Text()
		for strings.HasSuffix(raw, "\\") && sc.Scan() {
			ln++
			raw = strings.TrimSuffix(raw, "\\") + " " + sc.Text()
		}
		if inHelp {
			ind := indentOf(raw)
			if strings.TrimSpace(raw) == "" || ind > helpIndent {
				continue
			}
			inHelp = false
		}
		line := strings.TrimSpace(raw)
		if i := strings.Index(line, "#"); i >= 0 && !strings.Contains(line[:i], "\"") {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		kw, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch kw {
		case "config", "menuconfig":
			flush()
			sym = rest
			cur = &KconfigEntry{File: name, Line: ln, Depends: outer()}
		case "if":
			flush()
			stack = append(stack, block{kind: "if", conds: []string{rest}})
		case "endif", "endmenu", "endchoice":
			flush()
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case "menu", "choice":
			flush()
			stack = append(stack, block{kind: kw})
			// A menu's or choice's own "depends on" lines apply to
			// everything inside it.
			cur = &KconfigEntry{}
		case "comment", "source", "mainmenu", "rsource", "osource", "orsource":
			flush()
		case "depends":
			cond := strings.TrimSpace(strings.TrimPrefix(rest, "on"))
			if cur == nil {
				continue
			}
			if sym != "" {
				cur.Depends = append(cur.Depends, cond)
			} else if len(stack) > 0 {
				stack[len(stack)-1].conds = append(stack[len(stack)-1].conds, cond)
			}
		case "help", "---help---":
			inHelp = true
			helpIndent = indentOf(raw)
		}
	}
	flush()
	return sc.Err()
}

func indentOf(s string) int {
	n := 0
	for _, r := range s {
		switch r {
		case ' ':
			n++
		case '\t':
			n = (n/8 + 1) * 8
		default:
			return n
		}
	}
	return n
}

// Unmet returns the dependency expressions of sym that evaluate to n
// against cfg, each followed by the values of the symbols it names,
// e.g. "ARCH_SUPPORTS_ACPI (ARCH_SUPPORTS_ACPI=n) [drivers/acpi/Kconfig:9]".
// ok is false when the Kconfig files do not define sym at all.
func (idx KconfigIndex) Unmet(sym string, cfg DotConfig) (unmet []string, ok bool) {
	entries := idx[sym]
	if len(entries) == 0 {
		return nil, false
	}
	seen := map[string]bool{}
	for _, e := range entries {
		for _, d := range e.Depends {
			if evalExpr(d, cfg) != "n" || seen[d] {
				continue
			}
			seen[d] = true
			var vals []string
			for _, s := range exprSymbols(d) {
				vals = append(vals, s+"="+cfg.Value(s))
			}
			unmet = append(unmet, fmt.Sprintf("%s (%s) [%s:%d]", d, strings.Join(vals, ", "), e.File, e.Line))
		}
	}
	return unmet, true
}

// exprSymbols lists the symbols named in a Kconfig expression.
func exprSymbols(expr string) []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range tokenize(expr) {
		if isSymbol(t) && !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

func isSymbol(t string) bool {
	if t == "y" || t == "m" || t == "n" || t == "" {
		return false
	}
	for _, r := range t {
		if !(r == '_' || unicode.IsDigit(r) || unicode.IsUpper(r) || unicode.IsLower(r)) {
			return false
		}
	}
	return true
}

func tokenize(s string) []string {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case strings.HasPrefix(s[i:], "&&"), strings.HasPrefix(s[i:], "||"), strings.HasPrefix(s[i:], "!="),
			strings.HasPrefix(s[i:], "<="), strings.HasPrefix(s[i:], ">="):
			toks = append(toks, s[i:i+2])
			i += 2
		case strings.ContainsRune("()!=<>", rune(c)):
			toks = append(toks, string(c))
			i++
		case c == '"' || c == '\'':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				j = len(s) - i - 1
			}
			toks = append(toks, s[i:i+j+2])
			i += j + 2
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t()!=<>&|\"'", rune(s[j])) {
				j++
			}
			if j == i {
				j++
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks
}

// evalExpr evaluates a Kconfig dependency expression in tristate logic
// (n < m < y) against cfg. Unknown syntax evaluates to y, so that only
// provably unmet dependencies are reported.
func evalExpr(expr string, cfg DotConfig) string {
	p := &exprParser{toks: tokenize(expr), cfg: cfg}
	v := p.or()
	if p.bad || p.pos != len(p.toks) {
		return "y"
	}
	return v
}

type exprParser struct {
	toks []string
	pos  int
	cfg  DotConfig
	bad  bool
}

func (p *exprParser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return ""
}

func (p *exprParser) or() string {
	v := p.and()
	for p.peek() == "||" {
		p.pos++
		v = triMax(v, p.and())
	}
	return v
}

func (p *exprParser) and() string {
	v := p.not()
	for p.peek() == "&&" {
		p.pos++
		v = triMin(v, p.not())
	}
	return v
}

func (p *exprParser) not() string {
	if p.peek() == "!" {
		p.pos++
		return triNot(p.not())
	}
	return p.cmp()
}

func (p *exprParser) cmp() string {
	if p.peek() == "(" {
		p.pos++
		v := p.or()
		if p.peek() != ")" {
			p.bad = true
			return "y"
		}
		p.pos++
		return v
	}
	a := p.atom()
	switch op := p.peek(); op {
	case "=", "!=", "<", ">", "<=", ">=":
		p.pos++
		b := p.atom()
		var r bool
		switch op {
		case "=":
			r = a == b
		case "!=":
			r = a != b
		default:
			// Ordering comparisons are rare in depends lines; do not
			// claim they are unmet.
			return "y"
		}
		if r {
			return "y"
		}
		return "n"
	}
	switch a {
	case "y", "m", "n":
		return a
	}
	return "n" // a non-tristate value used as a condition
}

func (p *exprParser) atom() string {
	t := p.peek()
	if t == "" {
		p.bad = true
		return "y"
	}
	p.pos++
	switch {
	case t == "y" || t == "m" || t == "n":
		return t
	case strings.HasPrefix(t, "\"") || strings.HasPrefix(t, "'"):
		return strings.Trim(t, "\"'")
	case strings.HasPrefix(t, "$"):
		p.bad = true
		return "y"
	case isSymbol(t):
		v, ok := p.cfg[t]
		if !ok {
			return "n"
		}
		return strings.Trim(v, "\"")
	}
	p.bad = true
	return "y"
}

func triRank(v string) int {
	switch v {
	case "y":
		return 2
	case "m":
		return 1
	}
	return 0
}

func triMin(a, b string) string {
	if triRank(a) < triRank(b) {
		return norm(a)
	}
	return norm(b)
}

func triMax(a, b string) string {
	if triRank(a) > triRank(b) {
		return norm(a)
	}
	return norm(b)
}

func norm(v string) string {
	switch v {
	case "y", "m":
		return v
	}
	return "n"
}

func triNot(v string) string {
	switch norm(v) {
	case "y":
		return "n"
	case "m":
		return "m"
	}
	return "y"
}
