package symbols

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// An Itab is one of the executable's static interface tables (the
// moduledata's itablinks): a concrete type, an interface it implements, and
// the type's hash the itab carries, which a running program reads at the
// itab without knowing where the file was loaded.
type Itab struct {
	Interface string // e.g. "error"
	Type      string // the concrete type as %T prints it, e.g. "*fs.PathError"
	Hash      uint32
}

// Offsets in runtime's itab and _type (internal/abi.ITab and Type), the
// same since Go 1.14 on 64-bit.
const (
	itabType   = 8
	itabHash   = 16
	typeTFlag  = 20
	typeStr    = 40
	tflagStar  = 1 << 1 // the name has a leading '*' that is not the type's
	maxItabs   = 1 << 20
	maxNameLen = 1 << 12
)

// Itabs returns the executable's static itabs, read through the
// moduledata: stripped binaries have them too.
func (f *File) Itabs() (its []Itab, err error) {
	if f.closed.Load() {
		return nil, os.ErrClosed
	}
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			its, err = nil, fmt.Errorf("itabs: malformed executable: %v", p)
		}
	}()
	md, err := f.module()
	if err != nil {
		return nil, err
	}
	if md.nitabs > maxItabs {
		return nil, fmt.Errorf("itabs: %d itablinks", md.nitabs)
	}
	words := f.newWordReader()
	slots := make([]uint64, md.nitabs)
	for i := range slots {
		slots[i] = md.itablinks + 8*uint64(i)
	}
	itabs := words.many(slots)
	var fields []uint64 // each itab's inter and _type words
	for _, a := range itabs {
		fields = append(fields, a, a+itabType)
	}
	ptrs := words.many(fields)
	names := map[uint64]string{}
	name := func(typ uint64) (string, error) {
		if n, ok := names[typ]; ok {
			return n, nil
		}
		n, err := f.typeName(md, typ)
		names[typ] = n
		return n, err
	}
	for i, a := range itabs {
		h, err := f.readVaddr(a+itabHash, 4)
		if err != nil {
			return nil, fmt.Errorf("itab at %#x: %w", a, err)
		}
		inter, err := name(ptrs[2*i])
		if err != nil {
			return nil, err
		}
		typ, err := name(ptrs[2*i+1])
		if err != nil {
			return nil, err
		}
		its = append(its, Itab{Interface: inter, Type: typ, Hash: binary.LittleEndian.Uint32(h)})
	}
	return its, nil
}

// TypeName returns the name of the type whose descriptor (runtime._type)
// is at ELF address addr, as %T prints it.
func (f *File) TypeName(addr uint64) (name string, err error) {
	if f.closed.Load() {
		return "", os.ErrClosed
	}
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			name, err = "", fmt.Errorf("type at %#x: malformed executable: %v", addr, p)
		}
	}()
	md, err := f.module()
	if err != nil {
		return "", err
	}
	return f.typeName(md, addr)
}

func (f *File) typeName(md moduleInfo, addr uint64) (string, error) {
	b, err := f.readVaddr(addr, typeStr+4)
	if err != nil {
		return "", fmt.Errorf("type at %#x: %w", addr, err)
	}
	tflag := b[typeTFlag]
	off := uint64(binary.LittleEndian.Uint32(b[typeStr:]))
	// A name: a flags byte, the length as a varint, the bytes.
	hdr, err := f.readVaddr(md.types+off, 1+binary.MaxVarintLen16)
	if err != nil {
		return "", fmt.Errorf("name of type at %#x: %w", addr, err)
	}
	n, k := binary.Uvarint(hdr[1:])
	if k <= 0 || n > maxNameLen {
		return "", fmt.Errorf("name of type at %#x: bad length", addr)
	}
	s, err := f.readVaddr(md.types+off+1+uint64(k), n)
	if err != nil {
		return "", fmt.Errorf("name of type at %#x: %w", addr, err)
	}
	if tflag&tflagStar != 0 && len(s) > 0 {
		s = s[1:]
	}
	return string(s), nil
}

// module returns the moduledata's fields, found once.
func (f *File) module() (moduleInfo, error) {
	f.mdOnce.Do(func() {
		t, err := f.pcln()
		if err != nil {
			f.mdErr = err
			return
		}
		f.md, f.mdErr = f.moduledata(t)
		if f.mdErr == nil && f.md.types == 0 {
			f.mdErr = errors.New("runtime.firstmoduledata has no types")
		}
	})
	return f.md, f.mdErr
}

// many reads the words at addrs, resolving the relocations of a
// position-independent executable in one scan of the tables rather than
// one per word.
func (w *wordReader) many(addrs []uint64) []uint64 {
	out := make([]uint64, len(addrs))
	pending := map[uint64][]int{}
	for i, a := range addrs {
		b, err := w.f.readVaddr(a, 8)
		if err != nil {
			continue
		}
		if out[i] = binary.LittleEndian.Uint64(b); out[i] == 0 && w.f.PIE {
			pending[a] = append(pending[a], i)
		}
	}
	if len(pending) == 0 {
		return out
	}
	w.eachRelative(func(off, addend uint64) bool {
		for _, i := range pending[off] {
			out[i] = addend
		}
		return true
	})
	return out
}
