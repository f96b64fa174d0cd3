package presets

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

// A Version is the cilium release whose presets apply to a binary.
type Version struct {
	Release string // e.g. "v1.18.5"; "" when unknown
	From    string // where Release was read: FromLdflags, FromModule or FromOverride
	Minor   string // the minor release whose functions are used
}

func (v Version) String() string {
	if v.Release == "" {
		return fmt.Sprintf("cilium %s (release unknown)", v.Minor)
	}
	return fmt.Sprintf("cilium %s (%s)", v.Release, v.From)
}

// Options tune Select.
type Options struct {
	// Release overrides the release read from the binary, for binaries
	// that do not carry it ("v1.17.16").
	Release string
	// Offsets, if not nil, is an offsets file made on an unstripped build
	// of the same code: on a stripped binary its captures come first.
	Offsets *offsets.File
}

// A Selection is what presets trace in one binary.
type Selection struct {
	Version Version
	Funcs   []Selected
	// Warnings are one line each: an unknown release, a preset function
	// the binary does not have, captures that cannot be read.
	Warnings []string
}

// Selected is one function a preset traces, found in the binary, with the
// captures resolved for it.
type Selected struct {
	Preset   string
	Func     symbols.Func
	Captures []args.Capture
	// ErrorResult is, in a binary without DWARF, the function's error
	// result from the offsets file or the catalogue of its release; nil
	// when it returns no error last, or when the binary has DWARF, which
	// gives it (session.AddErrorResults).
	ErrorResult *args.Capture
}

// Names returns the selected functions' names, in order.
func (s *Selection) Names() []string {
	names := make([]string, len(s.Funcs))
	for i, fn := range s.Funcs {
		names[i] = fn.Func.Name
	}
	return names
}

// Captures returns the captures of the selected function named name.
func (s *Selection) Captures(name string) []args.Capture {
	for _, fn := range s.Funcs {
		if fn.Func.Name == name {
			return fn.Captures
		}
	}
	return nil
}

// ErrorResult returns the error result of the selected function named
// name, if the selection knows it (see Selected.ErrorResult).
func (s *Selection) ErrorResult(name string) (args.Capture, bool) {
	for _, fn := range s.Funcs {
		if fn.Func.Name == name && fn.ErrorResult != nil {
			return *fn.ErrorResult, true
		}
	}
	return args.Capture{}, false
}

// DetectVersion returns the cilium release whose presets apply to f:
// release if set (f may then be nil), else what f's build information says
// (ReleaseOf); a release of a minor the presets do not know, or none, gets
// the newest presets, with a warning.
func DetectVersion(f *symbols.File, release string) (Version, []string, error) {
	var v Version
	if release != "" {
		r, err := ParseRelease(release)
		if err != nil {
			return v, nil, err
		}
		v.Release, v.From = r, FromOverride
	} else if bi, err := f.BuildInfo(); err == nil {
		v.Release, v.From = ReleaseOf(bi)
	}
	var warnings []string
	switch minor := MinorOf(v.Release); {
	case v.Release == "":
		v.Minor = Newest()
		warnings = append(warnings, fmt.Sprintf("the binary does not say which cilium release it is (no version in -ldflags nor in the main module): using the presets of %s; --cilium-version sets it", v.Minor))
	case !slices.Contains(Minors, minor):
		v.Minor = Newest()
		warnings = append(warnings, fmt.Sprintf("cilium %s has no presets of its own: using those of %s", v.Release, v.Minor))
	default:
		v.Minor = minor
	}
	return v, warnings, nil
}

// Select finds the functions of the named presets in f, in the order the
// presets list them, each once, with their captures: from DWARF when f has
// it; else from the offsets file, then the catalogue of f's release, which
// give the error results too (Selected.ErrorResult). A
// preset function f does not have, and captures that cannot be read, are
// warnings, never dropped silently; an unknown preset name is an
// *UnknownError.
func Select(f *symbols.File, names []string, opts Options) (*Selection, error) {
	var ps []*Preset
	for _, n := range names {
		p, err := Lookup(n)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	if opts.Offsets != nil {
		if err := opts.Offsets.Check(f); err != nil {
			return nil, err
		}
	}
	v, warnings, err := DetectVersion(f, opts.Release)
	if err != nil {
		return nil, err
	}
	sel := &Selection{Version: v, Warnings: warnings}
	seen := map[string]bool{}
	var wanted []Func // by selected function, the preset entry that chose it
	for _, p := range ps {
		for _, pf := range p.For(v.Minor) {
			fns, err := f.Funcs(pf.Name)
			var nm *symbols.NoMatchError
			if errors.As(err, &nm) {
				sel.Warnings = append(sel.Warnings, fmt.Sprintf("preset %s: %s is not in the binary (inlined, or not in this release)", p.Name, pf.Name))
				continue
			}
			if err != nil {
				return nil, err
			}
			for _, fn := range fns {
				if seen[fn.Name] {
					continue
				}
				seen[fn.Name] = true
				sel.Funcs = append(sel.Funcs, Selected{Preset: p.Name, Func: fn})
				wanted = append(wanted, pf)
			}
		}
	}
	if f.HasDWARF {
		sel.fromDWARF(f, wanted)
	} else {
		sel.fromCatalogue(f, wanted, opts.Offsets)
	}
	return sel, nil
}

// fromDWARF resolves the captures from f's DWARF.
func (s *Selection) fromDWARF(f *symbols.File, wanted []Func) {
	fns := make([]symbols.Func, len(s.Funcs))
	for i, sf := range s.Funcs {
		fns[i] = sf.Func
	}
	r := args.NewCaptureResolver(f, fns)
	for i := range s.Funcs {
		sf := &s.Funcs[i]
		for _, c := range wanted[i].Captures {
			name, expr, err := args.ParseCaptureFlag(c)
			if err == nil {
				var capt args.Capture
				if capt, err = r.Resolve(sf.Func, name, expr); err == nil {
					sf.Captures = append(sf.Captures, capt)
					continue
				}
			}
			// A parameter added in a later patch release: the
			// catalogue leaves the capture out of earlier ones too.
			var ce *args.CaptureError
			if errors.As(err, &ce) && !ce.Field {
				continue
			}
			s.Warnings = append(s.Warnings, fmt.Sprintf("preset %s: %s: not capturing: %v", sf.Preset, sf.Func.Name, err))
		}
	}
}

// fromCatalogue takes the captures and error results of a stripped binary
// from the offsets file, else from the catalogue of its release.
func (s *Selection) fromCatalogue(f *symbols.File, wanted []Func, o *offsets.File) {
	goMinor, _ := symbols.GoMinor(f.GoVersion)
	var tbl map[string][]string
	var tblErr error
	if s.Version.Release == "" {
		tblErr = errors.New("the cilium release is unknown")
	} else {
		tbl, tblErr = layout(s.Version.Release, f.Arch, goMinor)
	}
	var missing []string
	for i := range s.Funcs {
		sf := &s.Funcs[i]
		if c, ok := errorResult(sf.Func.Name, o, tbl); ok {
			sf.ErrorResult = &c
		}
		for _, c := range wanted[i].Captures {
			name, _, err := args.ParseCaptureFlag(c)
			if err != nil {
				s.Warnings = append(s.Warnings, fmt.Sprintf("preset %s: %s: %v", sf.Preset, sf.Func.Name, err))
				continue
			}
			if o != nil {
				if capt, err := o.Lookup(sf.Func.Name, name); err == nil {
					sf.Captures = append(sf.Captures, capt)
					continue
				}
			}
			if tbl == nil {
				missing = append(missing, sf.Func.Name+" "+name)
				continue
			}
			// Not in the release's layout: its function has no such
			// parameter in that release.
			capt, ok, err := fromTable(tbl, sf.Func.Name, name)
			if err != nil {
				s.Warnings = append(s.Warnings, fmt.Sprintf("preset %s: %s: %v", sf.Preset, sf.Func.Name, err))
			} else if ok {
				sf.Captures = append(sf.Captures, capt)
			}
		}
	}
	if len(missing) > 0 {
		s.Warnings = append(s.Warnings, fmt.Sprintf("%d preset captures not read: the binary is stripped and %v (an offsets file from an unstripped build, or --cilium-version for a release in the catalogue, supplies them)",
			len(missing), tblErr))
	}
}

// errorResult returns fn's error result from the offsets file o, else from
// the catalogue layout tbl; either may be nil.
func errorResult(fn string, o *offsets.File, tbl map[string][]string) (args.Capture, bool) {
	if o != nil {
		if c, ok := o.ErrorResult(fn); ok {
			return c, true
		}
	}
	c, ok, err := fromTable(tbl, fn, "error")
	return c, ok && err == nil && c.Kind == args.KindError
}

// fromTable returns the capture of fn named name from a catalogue layout.
func fromTable(tbl map[string][]string, fn, name string) (args.Capture, bool, error) {
	for _, s := range tbl[fn] {
		n, raw, ok := strings.Cut(s, "=")
		if !ok || n != name {
			continue
		}
		c, err := args.ParseRawCapture(name, raw)
		return c, err == nil, err
	}
	return args.Capture{}, false, nil
}
