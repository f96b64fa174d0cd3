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

// dwarfFieldOffset returns the byte offset of a member of a struct type
// of package runtime, reading only runtime's compile units: the Go linker
// puts every type in one of them.
func (f *File) dwarfFieldOffset(typ, field string) (off uint64, err error) {
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed DWARF: %v", p)
		}
	}()
	var (
		found, hasMember bool
		member           int64
	)
	_, err = f.readDebugInfo(func(u *dwarfUnit) (keep, stop bool, err error) {
		if u.name != "runtime" {
			return false, false, nil
		}
		cu, next, err := u.entry(u.first)
		if err != nil {
			return false, false, err
		}
		err = u.children(cu, next, func(e die, _, next int) (bool, error) {
			if e.tag != dwarf.TagStructType || e.name != typ {
				return true, nil
			}
			found = true
			return false, u.children(e, next, func(m die, _, _ int) (bool, error) {
				if m.tag == dwarf.TagMember && m.name == field {
					member, hasMember = m.memberLoc, true
					return false, nil
				}
				return true, nil
			})
		})
		return false, found, err
	})
	switch {
	case err != nil:
		return 0, err
	case !found:
		return 0, fmt.Errorf("type %s not in DWARF", typ)
	case !hasMember || member < 0:
		return 0, fmt.Errorf("%s.%s not in DWARF", typ, field)
	}
	return uint64(member), nil
}
