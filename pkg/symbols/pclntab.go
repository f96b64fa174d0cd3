package symbols

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// ErrNoPCLNTab is returned when a Go executable has no readable .gopclntab.
var ErrNoPCLNTab = errors.New("no .gopclntab")

// Magic numbers of the pclntab header written by Go 1.18-1.19 and 1.20+.
const (
	go118Magic = 0xfffffff0
	go120Magic = 0xfffffff1
)

// Layout of runtime._func: 32-bit words (ten since Go 1.20, nine before it
// added startLine), then funcID, flag, a pad byte and nfuncdata, then npcdata
// pcdata offsets and nfuncdata funcdata offsets.
const (
	funcHeaderSize    = 44
	funcHeaderSize118 = 40
	funcNameOff       = 4
	funcPCSP          = 16
	funcPCFile        = 20
	funcPCLn          = 24
	funcNPCData       = 28
	funcCUOffset      = 32
	// funcID, flag and nfuncdata, from the end of the header
	funcFuncIDBack    = 4
	funcFlagBack      = 3
	funcNFuncDataBack = 1

	funcFlagAsm     = 1 << 2
	pcdataInlTree   = 2 // abi.PCDATA_InlTreeIndex
	funcdataInlTree = 3 // abi.FUNCDATA_InlTree
)

// runtime.inlinedCall: its size and the offsets of the callee's name and the
// call site's pc, for Go 1.20+ and for Go 1.18-1.19.
type inlLayout struct{ size, nameOff, parentPC uint64 }

var (
	inlLayout120 = inlLayout{size: 16, nameOff: 4, parentPC: 8}
	inlLayout118 = inlLayout{size: 20, nameOff: 12, parentPC: 16}
)

func (t *pclntab) inlLayout() inlLayout {
	if t.magic == go118Magic {
		return inlLayout118
	}
	return inlLayout120
}

// pclntab is a parsed view of .gopclntab. Nothing is materialized per
// function: lookups read the tables in place.
type pclntab struct {
	addr      uint64 // virtual address of the header
	magic     uint32
	data      []byte
	quantum   uint64
	nfunc     int
	textStart uint64
	funcnames []byte
	cutab     []byte
	filetab   []byte
	pctab     []byte
	funcs     []byte // runtime.pclntab: the functab followed by the _func records
}

// parsePCLNTab parses the header. textStart is the virtual address of
// runtime.text, needed since Go 1.26 which stores 0 in the header; pass 0 to
// use the header's value.
func parsePCLNTab(data []byte) (*pclntab, uint64, error) {
	if len(data) < 8 {
		return nil, 0, errors.New("pclntab: short header")
	}
	magic := binary.LittleEndian.Uint32(data)
	if magic != go118Magic && magic != go120Magic {
		return nil, 0, fmt.Errorf("pclntab: unsupported magic %#x (Go older than 1.18?)", magic)
	}
	quantum, ptrSize := data[6], data[7]
	if data[4] != 0 || data[5] != 0 || (quantum != 1 && quantum != 2 && quantum != 4) || ptrSize != 8 {
		return nil, 0, errors.New("pclntab: malformed header")
	}
	if len(data) < 8+8*8 {
		return nil, 0, errors.New("pclntab: short header")
	}
	word := func(i int) uint64 { return binary.LittleEndian.Uint64(data[8+8*i:]) }
	t := &pclntab{data: data, magic: magic, quantum: uint64(quantum)}
	nfunc := word(0)
	headerText := word(2)
	var sub [5][]byte
	for i := range sub {
		off := word(3 + i)
		if off > uint64(len(data)) {
			return nil, 0, errors.New("pclntab: table offset out of bounds")
		}
		sub[i] = data[off:]
	}
	t.funcnames, t.cutab, t.filetab, t.pctab, t.funcs = sub[0], sub[1], sub[2], sub[3], sub[4]
	if nfunc == 0 || len(t.funcs) < 12 || nfunc > uint64(len(t.funcs)-4)/8 {
		return nil, 0, errors.New("pclntab: bad function count")
	}
	t.nfunc = int(nfunc)
	return t, headerText, nil
}

func u32(b []byte, off uint64) (uint32, bool) {
	if off > uint64(len(b)) || uint64(len(b))-off < 4 {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b[off:]), true
}

// entryOff returns the offset from textStart of function i's entry; i ==
// nfunc gives the end of the last function.
func (t *pclntab) entryOff(i int) uint64 {
	v, _ := u32(t.funcs, uint64(i)*8)
	return uint64(v)
}

func (t *pclntab) entry(i int) uint64 { return t.textStart + t.entryOff(i) }

// within reports whether the functions lie in [start, end), their entries
// not wrapping past 2⁶⁴: find subtracts textStart from a pc.
func (t *pclntab) within(start, end uint64) bool {
	lo, hi := t.entry(0), t.entry(t.nfunc)
	return lo >= t.textStart && lo >= start && hi >= lo && hi <= end
}

// record returns function i's _func record and its pcdata/funcdata arrays.
func (t *pclntab) record(i int) (funcRecord, bool) {
	off, ok := u32(t.funcs, uint64(i)*8+4)
	hdr := uint64(funcHeaderSize)
	if t.magic == go118Magic {
		hdr = funcHeaderSize118
	}
	if !ok || uint64(off) > uint64(len(t.funcs)) || uint64(len(t.funcs))-uint64(off) < hdr {
		return funcRecord{}, false
	}
	b := t.funcs[off:]
	npcdata, _ := u32(b, funcNPCData)
	n := hdr + 4*uint64(npcdata) + 4*uint64(b[hdr-funcNFuncDataBack])
	if n > uint64(len(b)) {
		return funcRecord{}, false
	}
	return funcRecord{b: b[:n], hdr: hdr, entry: t.entry(i)}, true
}

type funcRecord struct {
	b     []byte
	hdr   uint64 // size of the fixed part
	entry uint64
}

func (r funcRecord) word(off uint64) uint32 {
	v, _ := u32(r.b, off)
	return v
}

func (r funcRecord) nameOff() uint32 { return r.word(funcNameOff) }
func (r funcRecord) funcID() uint8   { return r.b[r.hdr-funcFuncIDBack] }
func (r funcRecord) flag() uint8     { return r.b[r.hdr-funcFlagBack] }

func (r funcRecord) pcdata(i uint32) uint32 {
	if i >= r.word(funcNPCData) {
		return 0
	}
	return r.word(r.hdr + 4*uint64(i))
}

// funcdata returns the offset of funcdata i relative to moduledata.gofunc.
func (r funcRecord) funcdata(i uint8) (uint32, bool) {
	if i >= r.b[r.hdr-funcNFuncDataBack] {
		return 0, false
	}
	v := r.word(r.hdr + 4*uint64(r.word(funcNPCData)) + 4*uint64(i))
	return v, v != ^uint32(0)
}

// name returns the NUL-terminated name at off in the function name table,
// without copying.
func (t *pclntab) name(off uint32) []byte {
	if uint64(off) >= uint64(len(t.funcnames)) {
		return nil
	}
	b := t.funcnames[off:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return nil
}

func (t *pclntab) funcName(i int) []byte {
	r, ok := t.record(i)
	if !ok {
		return nil
	}
	return t.name(r.nameOff())
}

// file returns the name of file index idx of the compilation unit at cuOff.
func (t *pclntab) file(cuOff uint32, idx int32) string {
	if idx < 0 {
		return "?"
	}
	off, ok := u32(t.cutab, 4*(uint64(cuOff)+uint64(idx)))
	if !ok || off == ^uint32(0) || uint64(off) >= uint64(len(t.filetab)) {
		return "?"
	}
	b := t.filetab[off:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return "?"
}

// A pcIter steps through a pc-value table, following the runtime's
// encoding: pairs of a zig-zag value delta and a pc delta in units of the
// instruction quantum, terminated by a zero value delta.
type pcIter struct {
	p       []byte
	quantum uint64
	first   bool
	// The current range: val holds for start <= pc < end.
	start, end uint64
	val        int32
	// err says why next stopped before the table's terminator.
	err error
}

// pcIter returns an iterator over the table at off for a function starting
// at entry; a zero off means the function has no such table.
func (t *pclntab) pcIter(off uint32, entry uint64) pcIter {
	it := pcIter{quantum: t.quantum, first: true, end: entry, val: -1}
	if off != 0 && uint64(off) < uint64(len(t.pctab)) {
		it.p = t.pctab[off:]
	}
	return it
}

// next advances to the next range. It returns false at the end of the table
// or when the table is malformed, including a pc past 2⁶⁴.
func (it *pcIter) next() bool {
	if it.p == nil {
		return false
	}
	uv, n := binary.Uvarint(it.p)
	if n <= 0 || (uv == 0 && !it.first) {
		if n <= 0 {
			it.err = errors.New("truncated")
		}
		it.p = nil
		return false
	}
	it.first = false
	p := it.p[n:]
	pcd, n := binary.Uvarint(p)
	if n <= 0 || pcd > (^uint64(0)-it.end)/it.quantum {
		it.err = errors.New("truncated, or past 2^64")
		it.p = nil
		return false
	}
	it.p = p[n:]
	if uv&1 != 0 {
		it.val += int32(-(uv >> 1) - 1)
	} else {
		it.val += int32(uv >> 1)
	}
	it.start, it.end = it.end, it.end+pcd*it.quantum
	return true
}

// pcvalue evaluates the pc-value table at off for pc.
func (t *pclntab) pcvalue(off uint32, entry, pc uint64) (int32, bool) {
	it := t.pcIter(off, entry)
	for it.next() {
		if pc < it.end {
			return it.val, true
		}
	}
	return -1, false
}

// codeEnd returns the end of function i's instructions: the pc range the
// compiler's pc-value tables cover. Unlike the next function's entry it
// excludes the alignment padding between functions.
func (t *pclntab) codeEnd(i int) uint64 {
	next := t.entry(i + 1)
	r, ok := t.record(i)
	if !ok {
		return next
	}
	it := t.pcIter(r.word(funcPCSP), r.entry)
	for it.next() {
	}
	if it.end <= r.entry || it.end > next {
		return next
	}
	return it.end
}

// find returns the index of the function containing pc.
func (t *pclntab) find(pc uint64) (int, bool) {
	if pc < t.textStart {
		return 0, false
	}
	off := pc - t.textStart
	if off >= t.entryOff(t.nfunc) {
		return 0, false
	}
	i := sort.Search(t.nfunc, func(i int) bool { return t.entryOff(i) > off }) - 1
	if i < 0 {
		return 0, false
	}
	return i, true
}
