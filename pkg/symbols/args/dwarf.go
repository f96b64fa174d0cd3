package args

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// The DWARF of a large Go binary is read piecemeal: debug/elf's DWARF
// decompresses every debug section (hundreds of megabytes for cilium-agent)
// and debug/dwarf's Type reads the whole graph of types reachable from the
// one asked for. Captures need a few functions' parameters and the types on
// the paths the expressions name. The Go linker writes one compile unit per
// package object, named by its import path, and puts every type in one unit
// of package runtime, referring to types by section offset; so .debug_info is
// streamed once, unit by unit, keeping only the units of the probed
// functions' packages and of runtime, and types are read from those units
// on demand.

// A dwarfUnit is one compile unit of .debug_info held in memory.
type dwarfUnit struct {
	off     uint64 // section offset of its header
	data    []byte // the whole unit, header included
	first   int    // index in data of the unit's first entry
	vers    int
	asize   int  // address size
	dwarf64 bool // 64-bit DWARF: section offsets are 8 bytes
	abbrev  abbrevTable
	name    string // DW_AT_name of the unit's entry: for Go, the import path
}

func (u *dwarfUnit) end() uint64 { return u.off + uint64(len(u.data)) }

// An abbrevTable maps abbreviation codes to their declarations.
type abbrevTable map[uint64]*abbrevDecl

type abbrevDecl struct {
	tag      dwarf.Tag
	children bool
	attrs    []abbrevAttr
}

type abbrevAttr struct {
	attr     dwarf.Attr
	form     uint64
	implicit int64 // the value of a DW_FORM_implicit_const attribute
}

// DWARF attribute forms (DWARF 5 §7.5.6); debug/dwarf does not export them.
const (
	formAddr          = 0x01
	formBlock2        = 0x03
	formBlock4        = 0x04
	formData2         = 0x05
	formData4         = 0x06
	formData8         = 0x07
	formString        = 0x08
	formBlock         = 0x09
	formBlock1        = 0x0a
	formData1         = 0x0b
	formFlag          = 0x0c
	formSdata         = 0x0d
	formStrp          = 0x0e
	formUdata         = 0x0f
	formRefAddr       = 0x10
	formRef1          = 0x11
	formRef2          = 0x12
	formRef4          = 0x13
	formRef8          = 0x14
	formRefUdata      = 0x15
	formIndirect      = 0x16
	formSecOffset     = 0x17
	formExprloc       = 0x18
	formFlagPresent   = 0x19
	formStrx          = 0x1a
	formAddrx         = 0x1b
	formRefSup4       = 0x1c
	formStrpSup       = 0x1d
	formData16        = 0x1e
	formLineStrp      = 0x1f
	formRefSig8       = 0x20
	formImplicitConst = 0x21
	formLoclistx      = 0x22
	formRnglistx      = 0x23
	formRefSup8       = 0x24
	formStrx1         = 0x25
	formStrx2         = 0x26
	formStrx3         = 0x27
	formStrx4         = 0x28
	formAddrx1        = 0x29
	formAddrx2        = 0x2a
	formAddrx3        = 0x2b
	formAddrx4        = 0x2c
	formGNUAddrIndex  = 0x1f01
	formGNUStrIndex   = 0x1f02
	formGNURefAlt     = 0x1f20
	formGNUStrpAlt    = 0x1f21
)

// parseAbbrevTable reads the abbreviation table at off in .debug_abbrev.
func parseAbbrevTable(b []byte, off uint64) (abbrevTable, error) {
	if off >= uint64(len(b)) {
		return nil, fmt.Errorf("abbreviation table offset %#x out of range", off)
	}
	c := cursor{b: b, pos: int(off)}
	t := abbrevTable{}
	for {
		code := c.uleb()
		if code == 0 || c.err != nil {
			break
		}
		d := &abbrevDecl{tag: dwarf.Tag(c.uleb()), children: c.u8() != 0}
		for {
			attr, form := c.uleb(), c.uleb()
			if attr == 0 && form == 0 || c.err != nil {
				break
			}
			a := abbrevAttr{attr: dwarf.Attr(attr), form: form}
			if form == formImplicitConst {
				a.implicit = c.sleb()
			}
			d.attrs = append(d.attrs, a)
		}
		t[code] = d
	}
	if c.err != nil {
		return nil, fmt.Errorf("abbreviation table at %#x: %w", off, c.err)
	}
	return t, nil
}

// A die is the part of a debugging information entry that captures use.
type die struct {
	off      uint64 // section offset
	tag      dwarf.Tag
	children bool
	name     string // only names stored in the entry itself (DW_FORM_string)
	// typ is the section offset of the DW_AT_type entry; hasType is false
	// when the entry has none (void).
	typ     uint64
	hasType bool
	// Constant attributes, with whether they are present.
	byteSize, encoding, count, upperBound, memberLoc int64
	hasByteSize, hasEncoding, hasCount               bool
	hasUpperBound                                    bool
	varParam, declaration                            bool
}

// errNotRead is returned for an entry in a compile unit that was not read:
// the reader then reads every unit.
var errNotRead = errors.New("DWARF entry in a compile unit not read")

// A cursor reads DWARF encodings, recording the first out-of-bounds read
// instead of panicking.
type cursor struct {
	b   []byte
	pos int
	err error
}

var errShort = errors.New("unexpected end of DWARF data")

func (c *cursor) bytes(n uint64) []byte {
	if c.err != nil {
		return nil
	}
	if c.pos < 0 || c.pos > len(c.b) || n > uint64(len(c.b)-c.pos) {
		c.err = errShort
		c.pos = len(c.b)
		return nil
	}
	b := c.b[c.pos : c.pos+int(n)]
	c.pos += int(n)
	return b
}

func (c *cursor) u8() uint8 {
	if b := c.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (c *cursor) u16() uint16 {
	if b := c.bytes(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (c *cursor) u32() uint32 {
	if b := c.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (c *cursor) u64() uint64 {
	if b := c.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// uint reads an n-byte little-endian unsigned integer, n <= 8.
func (c *cursor) uint(n int) uint64 {
	var v uint64
	for i, x := range c.bytes(uint64(n)) {
		v |= uint64(x) << (8 * i)
	}
	return v
}

func (c *cursor) uleb() uint64 {
	var v uint64
	for shift := 0; ; shift += 7 {
		x := c.u8()
		if c.err != nil {
			return 0
		}
		if shift < 64 {
			v |= uint64(x&0x7f) << shift
		}
		if x&0x80 == 0 {
			return v
		}
	}
}

func (c *cursor) sleb() int64 {
	var v int64
	shift := 0
	for {
		x := c.u8()
		if c.err != nil {
			return 0
		}
		if shift < 64 {
			v |= int64(x&0x7f) << shift
		}
		shift += 7
		if x&0x80 == 0 {
			if shift < 64 && x&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
}

func (c *cursor) cstring() string {
	if c.err == nil && (c.pos < 0 || c.pos > len(c.b)) {
		c.err = errShort
	}
	if c.err != nil {
		return ""
	}
	for i := c.pos; i < len(c.b); i++ {
		if c.b[i] == 0 {
			s := string(c.b[c.pos:i])
			c.pos = i + 1
			return s
		}
	}
	c.err = errShort
	c.pos = len(c.b)
	return ""
}

// entry decodes the entry at index pos of u's data, returning it and the
// index of the next entry. A zero abbreviation code, ending a list of
// children, gives a die with tag 0.
func (u *dwarfUnit) entry(pos int) (die, int, error) {
	c := cursor{b: u.data, pos: pos}
	e := die{off: u.off + uint64(pos)}
	code := c.uleb()
	if c.err != nil || code == 0 {
		return e, c.pos, c.err
	}
	d := u.abbrev[code]
	if d == nil {
		return e, c.pos, fmt.Errorf("DWARF entry at %#x: unknown abbreviation code %d", e.off, code)
	}
	e.tag, e.children = d.tag, d.children
	offSize := 4
	if u.dwarf64 {
		offSize = 8
	}
	for _, a := range d.attrs {
		form := a.form
		for form == formIndirect && c.err == nil {
			form = c.uleb()
		}
		var (
			val     int64 // constants and flags
			isConst bool
			ref     uint64
			isRef   bool
			block   []byte
		)
		switch form {
		case formAddr:
			c.bytes(uint64(u.asize))
		case formData1, formRef1, formFlag, formStrx1, formAddrx1:
			val = int64(c.u8())
		case formData2, formRef2, formStrx2, formAddrx2:
			val = int64(c.u16())
		case formStrx3, formAddrx3:
			val = int64(c.uint(3))
		case formData4, formRef4, formStrx4, formAddrx4, formRefSup4:
			val = int64(c.u32())
		case formData8, formRef8, formRefSig8, formRefSup8:
			val = int64(c.u64())
		case formData16:
			c.bytes(16)
		case formSdata:
			val = c.sleb()
		case formUdata, formRefUdata, formStrx, formAddrx, formLoclistx, formRnglistx, formGNUAddrIndex, formGNUStrIndex:
			val = int64(c.uleb())
		case formImplicitConst:
			val = a.implicit
		case formFlagPresent:
			val = 1
		case formString:
			if a.attr != dwarf.AttrName {
				c.cstring()
				break
			}
			// No Go name has a control character; the names go
			// into one-line errors.
			if e.name = c.cstring(); strings.ContainsFunc(e.name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				return e, c.pos, fmt.Errorf("DWARF entry at %#x: control character in name %q", e.off, e.name)
			}
		case formStrp, formLineStrp, formSecOffset, formStrpSup, formGNURefAlt, formGNUStrpAlt:
			c.bytes(uint64(offSize))
		case formRefAddr:
			n := offSize
			if u.vers == 2 {
				n = u.asize
			}
			ref, isRef = c.uint(n), true
		case formBlock1:
			block = c.bytes(uint64(c.u8()))
		case formBlock2:
			block = c.bytes(uint64(c.u16()))
		case formBlock4:
			block = c.bytes(uint64(c.u32()))
		case formBlock, formExprloc:
			block = c.bytes(c.uleb())
		default:
			return e, c.pos, fmt.Errorf("DWARF entry at %#x: unknown attribute form %#x", e.off, form)
		}
		switch form {
		case formData1, formData2, formData4, formData8, formSdata, formUdata, formImplicitConst, formFlag, formFlagPresent:
			isConst = true
		case formRef1, formRef2, formRef4, formRef8, formRefUdata:
			ref, isRef = u.off+uint64(val), true
		}
		switch a.attr {
		case dwarf.AttrType:
			if !isRef {
				return e, c.pos, fmt.Errorf("DWARF entry at %#x: type attribute of form %#x is not supported", e.off, form)
			}
			e.typ, e.hasType = ref, true
		case dwarf.AttrByteSize:
			e.byteSize, e.hasByteSize = val, isConst
		case dwarf.AttrEncoding:
			e.encoding, e.hasEncoding = val, isConst
		case dwarf.AttrCount:
			e.count, e.hasCount = val, isConst
		case dwarf.AttrUpperBound:
			e.upperBound, e.hasUpperBound = val, isConst
		case dwarf.AttrDataMemberLoc:
			switch {
			case isConst:
				e.memberLoc = val
			case block != nil:
				// A location expression: DW_OP_plus_uconst N.
				bc := cursor{b: block}
				if bc.u8() != 0x23 {
					return e, c.pos, fmt.Errorf("DWARF entry at %#x: unexpected member location opcode", e.off)
				}
				e.memberLoc = int64(bc.uleb())
				if bc.err != nil {
					return e, c.pos, fmt.Errorf("DWARF entry at %#x: member location: %w", e.off, bc.err)
				}
			}
		case dwarf.AttrVarParam:
			e.varParam = isConst && val != 0
		case dwarf.AttrDeclaration:
			e.declaration = true
		}
	}
	if c.err != nil {
		return e, c.pos, fmt.Errorf("DWARF entry at %#x: %w", e.off, c.err)
	}
	return e, c.pos, nil
}

// skip returns the index of the entry after e's children, e being the
// entry decoded at index pos whose children start at next.
func (u *dwarfUnit) skip(e die, next int) (int, error) {
	if !e.children {
		return next, nil
	}
	for depth := 1; depth > 0; {
		k, n, err := u.entry(next)
		if err != nil {
			return 0, err
		}
		if n == next || next >= len(u.data) {
			return 0, fmt.Errorf("DWARF entry at %#x: children run past the unit", e.off)
		}
		next = n
		switch {
		case k.tag == 0:
			depth--
		case k.children:
			depth++
		}
	}
	return next, nil
}

// children calls fn with each direct child of the entry decoded at pos
// whose children start at next, until fn returns false.
func (u *dwarfUnit) children(e die, next int, fn func(k die, pos, next int) (bool, error)) error {
	if !e.children {
		return nil
	}
	for {
		k, n, err := u.entry(next)
		if err != nil {
			return err
		}
		if k.tag == 0 {
			return nil
		}
		more, err := fn(k, next, n)
		if err != nil || !more {
			return err
		}
		if next, err = u.skip(k, n); err != nil {
			return err
		}
	}
}

// debugInfo is the compile units of .debug_info read so far, in section
// order.
type debugInfo struct {
	units []*dwarfUnit
	// all: every unit was kept, so a missing entry is not for want of
	// reading.
	all bool
}

// unitAt returns the unit holding section offset off and off's index in
// its data.
func (d *debugInfo) unitAt(off uint64) (*dwarfUnit, int, error) {
	lo, hi := 0, len(d.units)
	for lo < hi {
		m := (lo + hi) / 2
		if d.units[m].end() <= off {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(d.units) || off < d.units[lo].off+uint64(d.units[lo].first) {
		if d.all {
			return nil, 0, fmt.Errorf("no DWARF entry at offset %#x", off)
		}
		return nil, 0, fmt.Errorf("%w (offset %#x)", errNotRead, off)
	}
	u := d.units[lo]
	return u, int(off - u.off), nil
}

// entryAt decodes the entry at section offset off, returning its unit and
// the index of its first child.
func (d *debugInfo) entryAt(off uint64) (die, *dwarfUnit, int, error) {
	u, pos, err := d.unitAt(off)
	if err != nil {
		return die{}, nil, 0, err
	}
	e, next, err := u.entry(pos)
	if err == nil && e.tag == 0 {
		err = fmt.Errorf("no DWARF entry at offset %#x", off)
	}
	return e, u, next, err
}

// A unitVisitor is called with each compile unit as .debug_info is read: it
// says whether to keep the unit and whether to stop reading.
type unitVisitor func(u *dwarfUnit) (keep, stop bool, err error)

// readDebugInfo streams .debug_info, decompressing it if need be, and keeps
// the units visit asks for.
func readDebugInfo(f *symbols.File, visit unitVisitor) (*debugInfo, error) {
	ef, err := f.ELF()
	if err != nil {
		return nil, err
	}
	abbrevs, err := debugSection(f, ef, "abbrev")
	if err != nil {
		return nil, err
	}
	sect := debugSectionHeader(ef, "info")
	if sect == nil {
		return nil, ErrNoDWARF
	}
	// Uncompressed and mapped: units alias the file.
	var mapped []byte
	var r io.Reader
	if sect.Flags&elf.SHF_COMPRESSED == 0 && !strings.HasPrefix(sect.Name, ".zdebug") && f.Mapped() {
		if mapped, err = f.SectionData(sect); err != nil {
			return nil, err
		}
	} else {
		// Open reads a .zdebug section's size from its header.
		r = sect.Open()
	}
	tables := map[uint64]abbrevTable{}
	d := &debugInfo{}
	var off uint64
	var scratch []byte // the unit being read, until a unit is kept
	for {
		var head [12]byte
		var data []byte
		if mapped != nil {
			if off >= uint64(len(mapped)) {
				break
			}
			n := copy(head[:], mapped[off:])
			if n < 4 {
				return nil, fmt.Errorf("DWARF unit at %#x: %w", off, errShort)
			}
		} else {
			if _, err := io.ReadFull(r, head[:4]); err == io.EOF {
				break
			} else if err != nil {
				return nil, fmt.Errorf("read .debug_info: %w", err)
			}
		}
		length, lenSize := uint64(binary.LittleEndian.Uint32(head[:4])), 4
		dwarf64 := length == 0xffffffff
		if dwarf64 {
			if mapped == nil {
				if _, err := io.ReadFull(r, head[4:12]); err != nil {
					return nil, fmt.Errorf("read .debug_info: %w", err)
				}
			}
			length, lenSize = binary.LittleEndian.Uint64(head[4:12]), 12
		}
		if off > sect.Size || uint64(lenSize) > sect.Size-off || length > sect.Size-off-uint64(lenSize) {
			return nil, fmt.Errorf("DWARF unit at %#x: length %d past the section", off, length)
		}
		n := uint64(lenSize) + length
		if length == 0 {
			// Padding, as debug/dwarf reads it.
			off += n
			continue
		}
		if mapped != nil {
			data = mapped[off : off+n]
		} else {
			if uint64(cap(scratch)) < n {
				scratch = make([]byte, n)
			}
			data = scratch[:n]
			copy(data, head[:lenSize])
			if _, err := io.ReadFull(r, data[lenSize:]); err != nil {
				return nil, fmt.Errorf("read .debug_info: %w", err)
			}
		}
		u, err := parseUnitHeader(off, data, lenSize, dwarf64, abbrevs, tables)
		if err != nil {
			return nil, err
		}
		off += uint64(len(data))
		if u == nil {
			continue
		}
		keep, stop, err := visit(u)
		if err != nil {
			return nil, err
		}
		if keep {
			d.units = append(d.units, u)
			scratch = nil
		}
		if stop {
			break
		}
	}
	return d, nil
}

// parseUnitHeader reads the header of the unit in data and the name of its
// first entry; nil for units that are not compile or partial units.
func parseUnitHeader(off uint64, data []byte, lenSize int, dwarf64 bool, abbrevs []byte, tables map[uint64]abbrevTable) (*dwarfUnit, error) {
	c := cursor{b: data, pos: lenSize}
	u := &dwarfUnit{off: off, data: data, dwarf64: dwarf64, vers: int(c.u16())}
	if u.vers < 2 || u.vers > 5 {
		return nil, fmt.Errorf("DWARF unit at %#x: unsupported version %d", off, u.vers)
	}
	offset := func() uint64 {
		if dwarf64 {
			return c.u64()
		}
		return uint64(c.u32())
	}
	var abbrevOff uint64
	if u.vers == 5 {
		typ := c.u8()
		u.asize = int(c.u8())
		abbrevOff = offset()
		// DW_UT_compile and DW_UT_partial; type and skeleton units hold no
		// functions.
		if typ != 0x01 && typ != 0x03 {
			return nil, c.err
		}
	} else {
		abbrevOff = offset()
		u.asize = int(c.u8())
	}
	if c.err != nil {
		return nil, fmt.Errorf("DWARF unit at %#x: %w", off, c.err)
	}
	if u.asize != 4 && u.asize != 8 {
		return nil, fmt.Errorf("DWARF unit at %#x: address size %d", off, u.asize)
	}
	t, ok := tables[abbrevOff]
	if !ok {
		var err error
		if t, err = parseAbbrevTable(abbrevs, abbrevOff); err != nil {
			return nil, err
		}
		tables[abbrevOff] = t
	}
	u.abbrev, u.first = t, c.pos
	e, _, err := u.entry(u.first)
	if err != nil {
		return nil, err
	}
	u.name = e.name
	return u, nil
}

// debugSectionHeader returns the section .debug_NAME or .zdebug_NAME.
func debugSectionHeader(ef *elf.File, name string) *elf.Section {
	if s := ef.Section(".debug_" + name); s != nil {
		return s
	}
	return ef.Section(".zdebug_" + name)
}

// maxSection bounds a decompressed section read whole.
const maxSection = 1 << 26

// debugSection returns the contents of .debug_NAME, decompressed.
func debugSection(f *symbols.File, ef *elf.File, name string) ([]byte, error) {
	s := debugSectionHeader(ef, name)
	if s == nil {
		return nil, fmt.Errorf("%w: no .debug_%s", ErrNoDWARF, name)
	}
	if s.Flags&elf.SHF_COMPRESSED == 0 && !strings.HasPrefix(s.Name, ".zdebug") {
		return f.SectionData(s)
	}
	r := s.Open()
	if s.Size > maxSection {
		return nil, fmt.Errorf("section %s: %d bytes, too large", s.Name, s.Size)
	}
	b := make([]byte, s.Size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("section %s: %w", s.Name, err)
	}
	return b, nil
}

// subprograms returns the offsets of the top-level subprogram entries of u
// named in names, the first of each name.
func (u *dwarfUnit) subprograms(names map[string]bool) (map[string]uint64, error) {
	cu, next, err := u.entry(u.first)
	if err != nil {
		return nil, err
	}
	found := map[string]uint64{}
	err = u.children(cu, next, func(e die, _, _ int) (bool, error) {
		if _, dup := found[e.name]; e.tag == dwarf.TagSubprogram && names[e.name] && !dup {
			found[e.name] = e.off
		}
		return true, nil
	})
	return found, err
}

// paramTypes returns the offsets of the types of the formal parameters of
// the subprogram at section offset off in u.
func (u *dwarfUnit) paramTypes(off uint64) ([]uint64, error) {
	e, next, err := u.entry(int(off - u.off))
	if err != nil {
		return nil, err
	}
	var types []uint64
	err = u.children(e, next, func(c die, _, _ int) (bool, error) {
		if c.tag == dwarf.TagFormalParameter && c.hasType {
			types = append(types, c.typ)
		}
		return true, nil
	})
	return types, err
}
