package symbols

import (
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"unicode"
)

// Offsets are captures resolved on an unstripped build, for use on a
// stripped build of the same source: release cilium-agent images carry no
// DWARF.
type Offsets struct {
	GoVersion   string `json:"go_version"`
	Arch        string `json:"arch"`
	Fingerprint string `json:"fingerprint"` // see File.Fingerprint
	// GoidOffset is the offset of runtime.g.goid, for Go releases whose
	// offset the tracer does not know; 0 if it could not be found.
	GoidOffset uint64 `json:"goid_offset,omitempty"`
	// Funcs holds the resolved captures per function name.
	Funcs map[string][]Capture `json:"funcs"`
}

// ErrOffsetsMismatch is returned when an offsets file was generated from a
// different build than the executable it is used with.
var ErrOffsetsMismatch = errors.New("offsets file is for a different build")

// Fingerprint identifies a build in a way that stripping (-ldflags=-s -w)
// does not change. The Go build ID does change: the linker flags are part of
// its action ID, and the binary's content differs. The .gopclntab does not
// (function names, entry offsets, PC tables and file names are laid out
// before the symbol table and DWARF are dropped), nor does the build
// information apart from the -ldflags setting. The fingerprint is a SHA-256
// over the architecture, the build information without -ldflags, the text
// start and the whole .gopclntab.
func (f *File) Fingerprint() (string, error) {
	t, err := f.pcln()
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "arch %s\n", f.Arch)
	if bi, err := buildinfo.Read(f.r); err == nil {
		fmt.Fprintf(h, "go %s\npath %s\nmain %s %s %s\n", bi.GoVersion, bi.Path, bi.Main.Path, bi.Main.Version, bi.Main.Sum)
		for _, d := range bi.Deps {
			fmt.Fprintf(h, "dep %s %s %s\n", d.Path, d.Version, d.Sum)
		}
		for _, s := range bi.Settings {
			if s.Key != "-ldflags" {
				fmt.Fprintf(h, "setting %s=%s\n", s.Key, s.Value)
			}
		}
	}
	binary.Write(h, binary.LittleEndian, t.textStart)
	if err := f.hashPCLNTab(h, t); err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashPCLNTab writes the table to h, read from the file rather than through
// the mapping where it can be: hashing reads every page of it, 50 MB in
// cilium-agent, which through the mapping would all count as RSS.
func (f *File) hashPCLNTab(h io.Writer, t *pclntab) error {
	s := pclntabSection(f.elf)
	if f.file == nil || s == nil || s.Flags&elf.SHF_COMPRESSED != 0 || s.Size != uint64(len(t.data)) {
		_, err := h.Write(t.data)
		return err
	}
	_, err := io.CopyBuffer(h, io.NewSectionReader(f.file, int64(s.Offset), int64(s.Size)), make([]byte, 1<<20))
	return err
}

// NewOffsets resolves the captures (name and expression pairs) against f's
// DWARF for the functions in fns that have the argument each names. A
// capture whose argument no function has, or any other error, fails.
func NewOffsets(f *File, fns []Func, captures [][2]string) (*Offsets, error) {
	fp, err := f.Fingerprint()
	if err != nil {
		return nil, err
	}
	o := &Offsets{GoVersion: f.GoVersion, Arch: f.Arch, Fingerprint: fp, Funcs: map[string][]Capture{}}
	if off, err := f.GoidOffset(); err == nil {
		o.GoidOffset = off
	}
	r := f.NewCaptureResolver(fns)
	for _, nc := range captures {
		var missing error
		found := false
		for _, fn := range fns {
			c, err := r.Resolve(fn, nc[0], nc[1])
			var ce *CaptureError
			switch {
			case errors.As(err, &ce) && !ce.Field:
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
	return o, nil
}

// ReadOffsets decodes an offsets file.
func ReadOffsets(r io.Reader) (*Offsets, error) {
	var o Offsets
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
func (o *Offsets) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(o)
}

// Check returns an error wrapping ErrOffsetsMismatch unless o was generated
// from a build of the same code as f.
func (o *Offsets) Check(f *File) error {
	fp, err := f.Fingerprint()
	if err != nil {
		return err
	}
	if o.Arch != f.Arch || o.Fingerprint != fp {
		return fmt.Errorf("%w: file is for %s/%s %.12s, binary is %s/%s %.12s",
			ErrOffsetsMismatch, o.GoVersion, o.Arch, o.Fingerprint, f.GoVersion, f.Arch, fp)
	}
	return nil
}

// ErrNotInOffsets is returned by Lookup for a capture the offsets file does
// not have.
var ErrNotInOffsets = errors.New("not in the offsets file")

// Lookup returns the capture of fn named name, or an error wrapping
// ErrNotInOffsets listing the captures the file has.
func (o *Offsets) Lookup(fn, name string) (Capture, error) {
	cs, ok := o.Funcs[fn]
	if !ok {
		names := make([]string, 0, len(o.Funcs))
		for n := range o.Funcs {
			names = append(names, n)
		}
		sort.Strings(names)
		return Capture{}, fmt.Errorf("capture %s: %s %w (it has captures for: %s)", name, fn, ErrNotInOffsets, strings.Join(names, ", "))
	}
	var names []string
	for _, c := range cs {
		if c.Name == name {
			return c, nil
		}
		names = append(names, c.Name)
	}
	return Capture{}, fmt.Errorf("capture %s of %s: %w (it has: %s)", name, fn, ErrNotInOffsets, strings.Join(names, ", "))
}

// Validate checks what the BPF programs rely on.
func (c Capture) Validate() error {
	if c.Name == "" {
		return errors.New("capture without a name")
	}
	// The name becomes an attribute key and appears in errors, which are
	// one line.
	if strings.ContainsFunc(c.Name, unicode.IsControl) {
		return fmt.Errorf("capture %q: control character in the name", c.Name)
	}
	switch {
	case c.Kind != KindUint && c.Kind != KindInt && c.Kind != KindBool && c.Kind != KindPtr && c.Kind != KindString:
		return fmt.Errorf("capture %s: unknown kind %q", c.Name, c.Kind)
	case c.Kind == KindString && c.Size != 16,
		c.Kind != KindString && (c.Size < 1 || c.Size > 8):
		return fmt.Errorf("capture %s: bad size %d for %s", c.Name, c.Size, c.Kind)
	case c.Reg < 0 || c.Reg > 15:
		return fmt.Errorf("capture %s: bad register index %d", c.Name, c.Reg)
	case c.InReg && (c.Offset != 0 || c.Deref):
		return fmt.Errorf("capture %s: a register value has no offsets", c.Name)
	case c.Offset < -1<<31 || c.Offset > 1<<31-1 || c.DerefOffset < -1<<31 || c.DerefOffset > 1<<31-1:
		return fmt.Errorf("capture %s: offset out of range", c.Name)
	}
	return nil
}

// OpenOffsets reads the offsets file at path.
func OpenOffsets(path string) (*Offsets, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	o, err := ReadOffsets(fh)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return o, nil
}
