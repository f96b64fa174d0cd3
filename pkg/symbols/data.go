package symbols

import (
	"errors"
	"fmt"
	"os"
)

// ErrNoSymbol is returned by Strings for a variable the executable's
// .symtab does not name, or when it has no .symtab (a stripped build).
var ErrNoSymbol = errors.New("symbol not in .symtab")

// maxStrings bounds the arrays and strings Strings reads: the sizes come
// from untrusted input.
const maxStrings = 1 << 16

// Strings returns the initial value of the global variable name, of type
// [N]string, such as runtime.waitReasonStrings: the variable from .symtab,
// each string header's pointer through the dynamic relocations when the
// file holds none (a position-independent executable).
func (f *File) Strings(name string) (strs []string, err error) {
	if f.closed.Load() {
		return nil, os.ErrClosed
	}
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			strs, err = nil, fmt.Errorf("%s: malformed executable: %v", name, p)
		}
	}()
	st, err := f.symbols()
	if err != nil {
		return nil, fmt.Errorf("%s: %w (%v)", name, ErrNoSymbol, err)
	}
	addr, size, ok := st.lookup(name)
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, ErrNoSymbol)
	}
	if size%16 != 0 || size/16 > maxStrings {
		return nil, fmt.Errorf("%s: %d bytes is no array of strings", name, size)
	}
	if _, err := f.readVaddr(addr, size); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	words := f.newWordReader()
	for a := addr; a < addr+size; a += 16 {
		p, n := words.at(a), words.at(a+8)
		if n == 0 {
			strs = append(strs, "")
			continue
		}
		if n > maxStrings {
			return nil, fmt.Errorf("%s[%d]: length %d", name, len(strs), n)
		}
		b, err := f.readVaddr(p, n)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", name, len(strs), err)
		}
		strs = append(strs, string(b))
	}
	return strs, nil
}
