package symbols

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"os"
)

// goidOffsets is the offset of runtime.g.goid per Go minor release (the same
// for amd64 and arm64, whose g layouts match field for field). Tests check
// each entry against the DWARF of real builds.
var goidOffsets = map[int]uint64{
	18: 152,
	19: 152,
	20: 152,
	21: 152,
	22: 152,
	23: 160,
	24: 160,
	25: 152,
	26: 152,
}

// ErrUnknownGoVersion is returned by GoidOffset for a stripped executable of
// a Go release the offset table does not know.
var ErrUnknownGoVersion = errors.New("unknown Go version")

// GoidOffset returns the offset of the goid field in runtime.g: from a table
// of known Go releases (release candidates and betas included), else from
// DWARF when the executable has it. The table comes first because reading
// runtime.g from DWARF costs hundreds of milliseconds and of megabytes on a
// large binary; the tests check every entry against DWARF.
func (f *File) GoidOffset() (uint64, error) {
	if f.closed.Load() {
		return 0, os.ErrClosed
	}
	if f.Arch == "amd64" || f.Arch == "arm64" {
		if minor, ok := goMinor(f.GoVersion); ok {
			if off, ok := goidOffsets[minor]; ok {
				return off, nil
			}
		}
	}
	if f.HasDWARF {
		if off, err := f.dwarfFieldOffset("runtime.g", "goid"); err == nil {
			return off, nil
		}
	}
	if f.Arch != "amd64" && f.Arch != "arm64" {
		return 0, fmt.Errorf("goid offset: unsupported architecture %s", f.Arch)
	}
	return 0, fmt.Errorf("goid offset for %q without DWARF: %w", f.GoVersion, ErrUnknownGoVersion)
}

// GoidOffsetFrom is GoidOffset, falling back to the goid offset that
// `tracer offsets` recorded from an unstripped build of the same code in o
// (nil: no offsets file).
func (f *File) GoidOffsetFrom(o *Offsets) (uint64, error) {
	off, err := f.GoidOffset()
	if err == nil || o == nil {
		return off, err
	}
	if o.GoidOffset == 0 {
		return 0, fmt.Errorf("%w, nor does the offsets file have it", err)
	}
	if cerr := o.Check(f); cerr != nil {
		return 0, fmt.Errorf("%w, and the offsets file cannot supply it: %v", err, cerr)
	}
	return o.GoidOffset, nil
}

// dwarfFieldOffset returns the byte offset of a member of a struct type.
func (f *File) dwarfFieldOffset(typ, field string) (off uint64, err error) {
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed DWARF: %v", p)
		}
	}()
	d, err := f.elf.DWARF()
	if err != nil {
		return 0, err
	}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return 0, err
		}
		if e == nil {
			return 0, fmt.Errorf("type %s not in DWARF", typ)
		}
		if e.Tag != dwarf.TagStructType || e.Val(dwarf.AttrName) != typ {
			if e.Tag != dwarf.TagCompileUnit && e.Children {
				r.SkipChildren()
			}
			continue
		}
		if !e.Children {
			continue
		}
		for {
			m, err := r.Next()
			if err != nil {
				return 0, err
			}
			if m == nil || m.Tag == 0 {
				break
			}
			if m.Tag == dwarf.TagMember && m.Val(dwarf.AttrName) == field {
				if v, ok := m.Val(dwarf.AttrDataMemberLoc).(int64); ok && v >= 0 {
					return uint64(v), nil
				}
			}
			if m.Children {
				r.SkipChildren()
			}
		}
		return 0, fmt.Errorf("%s.%s not in DWARF", typ, field)
	}
}
