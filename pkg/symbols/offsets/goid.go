package offsets

import (
	"errors"
	"fmt"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

// ErrUnknownGoVersion is returned for a stripped executable of a Go release
// the tables do not know.
var ErrUnknownGoVersion = errors.New("unknown Go version")

// GoidOffset returns the offset of the goid field in runtime.g: from the
// table of known Go releases (release candidates and betas included), else
// from DWARF when the executable has it. The table comes first because reading
// runtime.g from DWARF costs hundreds of milliseconds and of megabytes on a
// large binary; the tests check every entry against DWARF.
func GoidOffset(f *symbols.File) (uint64, error) {
	// A closed file fails as its own methods do.
	if _, err := f.ELF(); err != nil {
		return 0, err
	}
	if g, ok := gTable(f); ok {
		return g.Goid, nil
	}
	if f.HasDWARF {
		if off, err := args.RuntimeFieldOffset(f, "runtime.g", "goid"); err == nil {
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
func GoidOffsetFrom(f *symbols.File, o *File) (uint64, error) {
	off, err := GoidOffset(f)
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
