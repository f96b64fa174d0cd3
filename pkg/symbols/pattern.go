package symbols

import (
	"bytes"
	"unicode/utf8"
)

// A pattern matches function names. It is either an exact name or a glob in
// which '*' matches any run of characters and '?' exactly one character,
// except that "(*" is always literal: Go method names contain it, as in
// "pkg.(*Endpoint).regenerate*", where only the final '*' is a wildcard.
// There is no escape character; no Go symbol contains '?'.
type pattern struct {
	text  string
	elems []patElem
	glob  bool
}

type patElem struct {
	kind byte // 'l' literal byte, '*' any run, '?' one character
	b    byte
}

func compilePattern(s string) pattern {
	p := pattern{text: s}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '(' && i+1 < len(s) && s[i+1] == '*':
			p.elems = append(p.elems, patElem{kind: 'l', b: '('}, patElem{kind: 'l', b: '*'})
			i++
		case c == '*' || c == '?':
			p.elems = append(p.elems, patElem{kind: c})
			p.glob = true
		default:
			p.elems = append(p.elems, patElem{kind: 'l', b: c})
		}
	}
	return p
}

// literal returns the pattern's text with wildcards removed, for ranking
// near misses.
func (p pattern) literal() string {
	var b []byte
	for _, e := range p.elems {
		if e.kind == 'l' {
			b = append(b, e.b)
		}
	}
	return string(b)
}

func (p pattern) match(name []byte) bool {
	if !p.glob {
		return len(name) == len(p.text) && string(name) == p.text
	}
	// Iterative matching with backtracking to the most recent '*': linear in
	// practice and never exponential.
	pi, ni := 0, 0
	starP, starN := -1, 0
	for ni < len(name) {
		if pi < len(p.elems) {
			e := p.elems[pi]
			switch e.kind {
			case '*':
				starP, starN = pi, ni
				pi++
				continue
			case '?':
				_, size := utf8.DecodeRune(name[ni:])
				pi++
				ni += size
				continue
			default:
				if name[ni] == e.b {
					pi++
					ni++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starN++
		pi, ni = starP+1, starN
	}
	for pi < len(p.elems) && p.elems[pi].kind == '*' {
		pi++
	}
	return pi == len(p.elems)
}

// mayMatchABI0 reports whether the pattern could name an ABI0 body (whose
// symbol name carries the ".abi0" suffix).
func (p pattern) mayMatchABI0() bool {
	return bytes.Contains([]byte(p.text), []byte("abi0"))
}
