package symbols

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/semver"
)

// goidOffsets is the offset of runtime.g.goid per Go release (the same for
// amd64 and arm64, whose g layouts match field for field). Tests check each
// entry against the DWARF of real builds, except Go 1.19, whose toolchain
// cannot be downloaded and run here: its g is the same as 1.18's and 1.20's
// up to goid.
var goidOffsets = map[string]uint64{
	"go1.18": 152,
	"go1.19": 152,
	"go1.20": 152,
	"go1.21": 152,
	"go1.22": 152,
	"go1.23": 160,
	"go1.24": 160,
	"go1.25": 152,
	"go1.26": 152,
}

// ErrUnknownGoVersion is returned by GoidOffset for a stripped executable of
// a Go release the offset table does not know.
var ErrUnknownGoVersion = errors.New("unknown Go version")

// GoidOffset returns the offset of the goid field in runtime.g: from a table
// of known Go releases, else from DWARF when the executable has it. The
// table comes first because reading runtime.g from DWARF costs hundreds of
// milliseconds and of megabytes on a large binary; the tests check every
// entry against DWARF.
func (f *File) GoidOffset() (uint64, error) {
	if f.closed.Load() {
		return 0, os.ErrClosed
	}
	if f.Arch == "amd64" || f.Arch == "arm64" {
		v := f.GoVersion
		if i := strings.IndexAny(v, " +-"); i >= 0 {
			v = v[:i]
		}
		release := semver.MajorMinor("v" + strings.TrimPrefix(v, "go"))
		if off, ok := goidOffsets["go"+strings.TrimPrefix(release, "v")]; ok {
			return off, nil
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
	return 0, fmt.Errorf("goid offset for %q: %w", f.GoVersion, ErrUnknownGoVersion)
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
