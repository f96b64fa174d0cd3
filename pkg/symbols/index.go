package symbols

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"slices"
)

// symtab is a view of .symtab and its string table, aliasing the file when
// it is memory-mapped.
type symtab struct {
	syms, strtab []byte
}

const symSize = 24 // Elf64_Sym

func (s *symtab) n() int { return len(s.syms) / symSize }

// fn returns symbol i if it is a defined function with a size; its name
// aliases the string table.
func (s *symtab) fn(i int) (name []byte, value, size uint64, ok bool) {
	b := s.syms[i*symSize : (i+1)*symSize]
	if elf.ST_TYPE(b[4]) != elf.STT_FUNC || elf.SectionIndex(binary.LittleEndian.Uint16(b[6:])) == elf.SHN_UNDEF {
		return nil, 0, 0, false
	}
	size = binary.LittleEndian.Uint64(b[16:])
	if size == 0 {
		return nil, 0, 0, false
	}
	return s.name(b), binary.LittleEndian.Uint64(b[8:]), size, true
}

func (s *symtab) name(sym []byte) []byte {
	off := uint64(binary.LittleEndian.Uint32(sym))
	if off >= uint64(len(s.strtab)) {
		return nil
	}
	b := s.strtab[off:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return nil
}

// baseName is the name a function is indexed by: without the ".abi0" the
// linker adds to ABI0 symbols.
func (s *symtab) baseName(i int) []byte {
	name, _, _, ok := s.fn(i)
	if !ok {
		return nil
	}
	base, _ := bytes.CutSuffix(name, []byte(abi0Suffix))
	return base
}

// lookup returns the value and size of the first symbol with the given
// name.
func (s *symtab) lookup(name string) (value, size uint64, ok bool) {
	for i := 0; i < s.n(); i++ {
		b := s.syms[i*symSize : (i+1)*symSize]
		if string(s.name(b)) == name {
			return binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:]), true
		}
	}
	return 0, 0, false
}

var errNoSymtab = errors.New("no usable .symtab")

// symbols returns the symbol table, loading it on first use.
func (f *File) symbols() (*symtab, error) {
	f.symMu.Lock()
	defer f.symMu.Unlock()
	if f.symtab != nil {
		return f.symtab, nil
	}
	sect := f.elf.Section(".symtab")
	if sect == nil || sect.Link == 0 || int(sect.Link) >= len(f.elf.Sections) {
		return nil, errNoSymtab
	}
	syms, err := f.SectionData(sect)
	if err != nil {
		return nil, err
	}
	strtab, err := f.SectionData(f.elf.Sections[sect.Link])
	if err != nil {
		return nil, err
	}
	f.symtab = &symtab{syms: syms, strtab: strtab}
	return f.symtab, nil
}

// A nameIndex finds functions by exact name without holding their names:
// entries are a 32-bit hash of a name and the function's index, sorted.
// A 130 MB binary has ~200k functions: 1.6 MB of index.
type nameIndex []uint64

// nameSeed seeds the index's hash: the index lives only in memory.
var nameSeed = maphash.MakeSeed()

func hashName(b []byte) uint32 {
	return uint32(maphash.Bytes(nameSeed, b))
}

func buildNameIndex(n int, name func(int) []byte) nameIndex {
	x := make(nameIndex, 0, n)
	for i := 0; i < n; i++ {
		if nm := name(i); nm != nil {
			x = append(x, uint64(hashName(nm))<<32|uint64(uint32(i)))
		}
	}
	return radixSortHigh(x)
}

// radixSortHigh sorts x by the upper 32 bits of its entries, keeping the
// order of equal ones: a byte at a time, each pass a sequential read and
// 256 sequential writes, which is several times faster than a comparison
// sort of 200k entries.
func radixSortHigh(x []uint64) []uint64 {
	tmp := make([]uint64, len(x))
	for shift := 32; shift < 64; shift += 8 {
		var count [257]int
		for _, v := range x {
			count[(v>>shift)&0xff+1]++
		}
		for b := 1; b < len(count); b++ {
			count[b] += count[b-1]
		}
		for _, v := range x {
			d := (v >> shift) & 0xff
			tmp[count[d]] = v
			count[d]++
		}
		x, tmp = tmp, x
	}
	return x
}

// lookup calls fn with the index of every entry whose name may be name, in
// increasing order.
func (x nameIndex) lookup(name []byte, fn func(int)) {
	h := uint64(hashName(name)) << 32
	i, _ := slices.BinarySearch(x, h)
	for ; i < len(x) && x[i]&^0xffffffff == h; i++ {
		fn(int(uint32(x[i])))
	}
}

// candidates calls fn with the index of every function that may match p:
// through the name index for exact names (the index is built on the first
// exact lookup), else all of them.
func (f *File) candidates(p pattern, index *nameIndex, n int, name func(int) []byte, fn func(int)) {
	if p.glob {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	f.mu.Lock()
	if *index == nil {
		*index = buildNameIndex(n, name)
	}
	x := *index
	f.mu.Unlock()
	x.lookup(bytes.TrimSuffix([]byte(p.text), []byte(abi0Suffix)), fn)
}
