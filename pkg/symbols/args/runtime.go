package args

import (
	"debug/dwarf"
	"fmt"

	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// RuntimeFieldOffset returns the byte offset of a member of a struct type
// of package runtime, such as runtime.g's goid, reading only runtime's
// compile units: the Go linker puts every type in one of them.
func RuntimeFieldOffset(f *symbols.File, typ, field string) (off uint64, err error) {
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
	_, err = readDebugInfo(f, func(u *dwarfUnit) (keep, stop bool, err error) {
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
