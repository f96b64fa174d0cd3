package offsets

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

// A File is an offsets file: captures resolved on an unstripped build, for
// use on a stripped build of the same source: release cilium-agent images
// carry no DWARF.
type File struct {
	GoVersion   string `json:"go_version"`
	Arch        string `json:"arch"`
	Fingerprint string `json:"fingerprint"` // see symbols.File.Fingerprint
	// GoidOffset is the offset of runtime.g.goid, for Go releases whose
	// offset the tracer does not know; 0 if it could not be found.
	GoidOffset uint64 `json:"goid_offset,omitempty"`
	// G and WaitReasons are runtime.g's layout and the names of
	// runtime.waitReason's values (see GOffsets, WaitReasons), for reading
	// goroutines' states; absent if they could not be found.
	G           *G       `json:"g,omitempty"`
	WaitReasons []string `json:"wait_reasons,omitempty"`
	// Funcs holds the resolved captures per function name.
	Funcs map[string][]args.Capture `json:"funcs"`
}

// ErrMismatch is returned when an offsets file was generated from a
// different build than the executable it is used with.
var ErrMismatch = errors.New("offsets file is for a different build")

// New resolves the captures (name and expression pairs) against f's DWARF
// for the functions in fns that have the argument each names. A capture
// whose argument no function has, or any other error, fails.
func New(f *symbols.File, fns []symbols.Func, captures [][2]string) (*File, error) {
	fp, err := f.Fingerprint()
	if err != nil {
		return nil, err
	}
	o := &File{GoVersion: f.GoVersion, Arch: f.Arch, Fingerprint: fp, Funcs: map[string][]args.Capture{}}
	// One pass over DWARF, not two, when the tables do not know the
	// release.
	if g, err := GOffsets(f); err == nil {
		o.G, o.GoidOffset = &g, g.Goid
	} else if off, err := GoidOffset(f); err == nil {
		o.GoidOffset = off
	}
	if names, err := WaitReasons(f); err == nil {
		o.WaitReasons = names
	}
	r := args.NewCaptureResolver(f, fns)
	for _, nc := range captures {
		var missing error
		found := false
		for _, fn := range fns {
			c, err := r.Resolve(fn, nc[0], nc[1])
			var ce *args.CaptureError
			var re *args.ResultError
			switch {
			case errors.As(err, &ce) && !ce.Field, errors.As(err, &re):
				if missing == nil {
					missing = fmt.Errorf("%s: %w", fn.Name, err)
				}
				continue
			case err != nil:
				return nil, fmt.Errorf("%s: %w", fn.Name, err)
			}
			o.Funcs[fn.Name] = append(o.Funcs[fn.Name], c)
			found = true
		}
		if !found && missing != nil {
			return nil, missing
		}
	}
	// A function's error result goes with it: the stripped build then
	// reports the errors its calls return.
	for _, fn := range fns {
		c, ok, err := r.ErrorResult(fn)
		if err != nil {
			return nil, fmt.Errorf("%s: results: %w", fn.Name, err)
		}
		if ok {
			o.Funcs[fn.Name] = append(o.Funcs[fn.Name], c)
		}
	}
	return o, nil
}

// Read decodes an offsets file.
func Read(r io.Reader) (*File, error) {
	var o File
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return nil, fmt.Errorf("offsets file: %w", err)
	}
	if o.Fingerprint == "" {
		return nil, errors.New("offsets file: no fingerprint")
	}
	// runtime.g is a few hundred bytes, its fields 8-byte aligned.
	if o.GoidOffset%8 != 0 || o.GoidOffset >= 4096 {
		return nil, fmt.Errorf("offsets file: bad goid_offset %d", o.GoidOffset)
	}
	if o.G != nil {
		if err := o.G.validate(); err != nil {
			return nil, fmt.Errorf("offsets file: runtime.g: %w", err)
		}
	}
	// runtime.waitReason is a uint8.
	if len(o.WaitReasons) > 256 {
		return nil, fmt.Errorf("offsets file: %d wait reasons", len(o.WaitReasons))
	}
	if len(o.WaitReasons) == 0 {
		o.WaitReasons = nil // as written back
	}
	for fn, cs := range o.Funcs {
		for _, c := range cs {
			if err := c.Validate(); err != nil {
				return nil, fmt.Errorf("offsets file: %q: %w", fn, err)
			}
		}
	}
	return &o, nil
}

// Write encodes o as indented JSON.
func (o *File) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(o)
}

// Check returns an error wrapping ErrMismatch unless o was generated from a
// build of the same code as f.
func (o *File) Check(f *symbols.File) error {
	fp, err := f.Fingerprint()
	if err != nil {
		return err
	}
	if o.Arch != f.Arch || o.Fingerprint != fp {
		return fmt.Errorf("%w: file is for %s/%s %.12s, binary is %s/%s %.12s",
			ErrMismatch, o.GoVersion, o.Arch, o.Fingerprint, f.GoVersion, f.Arch, fp)
	}
	return nil
}

// ErrNotInFile is returned by Lookup for a capture the offsets file does not
// have.
var ErrNotInFile = errors.New("not in the offsets file")

// Lookup returns the capture of fn named name, or an error wrapping
// ErrNotInFile listing the captures the file has.
func (o *File) Lookup(fn, name string) (args.Capture, error) {
	cs, ok := o.Funcs[fn]
	if !ok {
		names := make([]string, 0, len(o.Funcs))
		for n := range o.Funcs {
			names = append(names, n)
		}
		sort.Strings(names)
		return args.Capture{}, fmt.Errorf("capture %s: %s %w (it has captures for: %s)", name, fn, ErrNotInFile, strings.Join(names, ", "))
	}
	var names []string
	for _, c := range cs {
		if c.Name == name {
			return c, nil
		}
		names = append(names, c.Name)
	}
	return args.Capture{}, fmt.Errorf("capture %s of %s: %w (it has: %s)", name, fn, ErrNotInFile, strings.Join(names, ", "))
}

// ErrorResult returns the capture of fn's error result, if the file has
// it (New adds it for every function that returns an error last).
func (o *File) ErrorResult(fn string) (args.Capture, bool) {
	for _, c := range o.Funcs[fn] {
		if c.Kind == args.KindError {
			return c, true
		}
	}
	return args.Capture{}, false
}

// Open reads the offsets file at path.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	o, err := Read(fh)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return o, nil
}
