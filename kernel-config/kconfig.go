package kernelconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
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

// IndexKconfig reads the Kconfig tree of the kernel source at src the way
// Kconfig does: from the top Kconfig, following source statements (with
// $(SRCARCH) set to srcArch), so that conditions of if and menu blocks
// around a source statement apply to the symbols in the sourced file.
func IndexKconfig(src, srcArch string) (KconfigIndex, error) {
	idx := KconfigIndex{}
	r := &kconfigReader{fs: os.DirFS(src), vars: map[string]string{"SRCARCH": srcArch}, idx: idx}
	if err := r.parse("Kconfig", nil); err != nil {
		return nil, fmt.Errorf("index Kconfig in %s: %w", src, err)
	}
	return idx, nil
}

type kconfigReader struct {
	fs    fs.FS
	vars  map[string]string
	idx   KconfigIndex
	depth int
}

type block struct {
	conds []string
}

func (r *kconfigReader) parse(name string, inherited []string) error {
	b, err := fs.ReadFile(r.fs, name)
	if err != nil {
		return err
	}
	r.depth++
	defer func() { r.depth-- }()
	if r.depth > 64 {
		return fmt.Errorf("%s: source nesting too deep", name)
	}
	var (
		stack      []block
		cur        *KconfigEntry // entry whose attributes we are reading
		sym        string
		inMenu     bool // reading a menu's or choice's attributes
		inHelp     bool
		helpIndent int
	)
	flush := func() {
		if cur != nil && sym != "" {
			r.idx[sym] = append(r.idx[sym], *cur)
		}
		cur, sym, inMenu = nil, "", false
	}
	outer := func() []string {
		c := append([]string(nil), inherited...)
		for _, b := range stack {
			c = append(c, b.conds...)
		}
		return c
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		ln := i + 1
		raw := lines[i]
		for strings.HasSuffix(raw, "\\") && i+1 < len(lines) {
			i++
			raw = strings.TrimSuffix(raw, "\\") + " " + lines[i]
		}
		if inHelp {
			// As in Kconfig, the first line of a help text sets its
			// indentation; the text ends at a line indented less, or
			// not at all.
			if strings.TrimSpace(raw) == "" {
				continue
			}
			ind := indentOf(raw)
			if helpIndent < 0 && ind > 0 {
				helpIndent = ind
			}
			if helpIndent >= 0 && ind >= helpIndent {
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
			stack = append(stack, block{conds: []string{rest}})
		case "endif", "endmenu", "endchoice":
			flush()
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case "menu", "choice":
			flush()
			stack = append(stack, block{})
			inMenu = true
		case "comment", "mainmenu":
			flush()
		case "source", "osource", "rsource", "orsource":
			flush()
			p := r.expand(strings.Trim(rest, "\""))
			if strings.HasPrefix(kw, "r") || kw == "orsource" {
				p = path.Join(path.Dir(name), p)
			}
			if err := r.parse(p, outer()); err != nil {
				if strings.HasPrefix(kw, "o") && errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return fmt.Errorf("%s:%d: %w", name, ln, err)
			}
		case "depends":
			cond := strings.TrimSpace(strings.TrimPrefix(rest, "on"))
			switch {
			case sym != "":
				cur.Depends = append(cur.Depends, cond)
			case inMenu && len(stack) > 0:
				// A menu's or choice's own "depends on" applies to
				// everything inside it.
				stack[len(stack)-1].conds = append(stack[len(stack)-1].conds, cond)
			}
		case "help", "---help---":
			inHelp, helpIndent = true, -1
		}
	}
	flush()
	return nil
}

// expand replaces $(VAR) references in a source path.
func (r *kconfigReader) expand(p string) string {
	for k, v := range r.vars {
		p = strings.ReplaceAll(p, "$("+k+")", v)
	}
	return p
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
		if isSymbol(t) && t == strings.ToUpper(t) && !numberRe.MatchString(t) && !seen[t] {
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
	case isSymbol(t) && t == strings.ToUpper(t) && !numberRe.MatchString(t):
		// A symbol without a value (its dependencies unmet) is n.
		v, ok := p.cfg[t]
		if !ok {
			return "n"
		}
		return strings.Trim(v, "\"")
	case isSymbol(t):
		// Numbers and lower-case words are constants, as in Kconfig.
		return t
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
