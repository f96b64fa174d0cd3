package args

import (
	"debug/dwarf"
	"fmt"

	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// A Field names a member of a struct type of package runtime, such as
// {"runtime.g", "goid"}.
type Field struct {
	Type, Name string
}

// RuntimeFieldOffset returns the byte offset of a member of a struct type
// of package runtime, such as runtime.g's goid, reading only runtime's
// compile units: the Go linker puts every type in one of them.
func RuntimeFieldOffset(f *symbols.File, typ, field string) (uint64, error) {
	offs, err := RuntimeFieldOffsets(f, Field{typ, field})
	if err != nil {
		return 0, err
	}
	return offs[0], nil
}

// RuntimeFieldOffsets is RuntimeFieldOffset for several fields, in one pass
// over runtime's compile units: each pass costs hundreds of milliseconds on
// a large binary.
func RuntimeFieldOffsets(f *symbols.File, fields ...Field) (offs []uint64, err error) {
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed DWARF: %v", p)
		}
	}()
	offs = make([]uint64, len(fields))
	found := make([]bool, len(fields))
	types := map[string]bool{}
	for _, fd := range fields {
		types[fd.Type] = false
	}
	seen := 0 // types found
	_, err = readDebugInfo(f, func(u *dwarfUnit) (keep, stop bool, err error) {
		if u.name != "runtime" {
			return false, false, nil
		}
		cu, next, err := u.entry(u.first)
		if err != nil {
			return false, false, err
		}
		err = u.children(cu, next, func(e die, _, next int) (bool, error) {
			if done, want := types[e.name]; e.tag != dwarf.TagStructType || !want || done {
				return true, nil
			}
			types[e.name] = true
			seen++
			err := u.children(e, next, func(m die, _, _ int) (bool, error) {
				if m.tag != dwarf.TagMember || m.memberLoc < 0 {
					return true, nil
				}
				for i, fd := range fields {
					if fd.Type == e.name && fd.Name == m.name {
						offs[i], found[i] = uint64(m.memberLoc), true
					}
				}
				return true, nil
			})
			return seen < len(types), err
		})
		return false, seen == len(types), err
	})
	if err != nil {
		return nil, err
	}
	for i, fd := range fields {
		switch {
		case !types[fd.Type]:
			return nil, fmt.Errorf("type %s not in DWARF", fd.Type)
		case !found[i]:
			return nil, fmt.Errorf("%s.%s not in DWARF", fd.Type, fd.Name)
		}
	}
	return offs, nil
}
