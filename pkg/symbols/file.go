package symbols

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrNotGo is returned for a valid ELF file that is not a Go executable (no
// Go build information and no .gopclntab).
var ErrNotGo = errors.New("not a Go executable")

// ErrNotELF is returned for files that are not ELF executables.
var ErrNotELF = errors.New("not an ELF file")

// catchPanics turns panics in the parsers into errors: every parser checks
// its bounds, but a binary from a container is untrusted input and must never
// crash the tracer. The fuzz test turns it off to see the panics the bounds
// checks should have prevented.
var catchPanics = true

// A File is an open Go executable. Its exported fields are read when the file
// is opened; the function table and line tables are parsed on first use.
// A File is safe for concurrent use.
type File struct {
	GoVersion string // from the build information, e.g. "go1.22.12"
	BuildID   string // Go build ID from the .note.go.buildid note
	Arch      string // GOARCH style: "amd64", "arm64"
	PIE       bool
	Stripped  bool // no .symtab
	HasDWARF  bool
	// Inode is the file's inode number when it was opened by Open (0
	// otherwise): it tells the file's mappings in a process from those of
	// other files.
	Inode uint64

	elf    *elf.File
	r      io.ReaderAt
	closer io.Closer
	mapped []byte // the whole file when it could be memory-mapped
	// file is the file opened by Open: reading it rather than the
	// mapping puts what is read once in the page cache, not the RSS.
	file  *os.File
	unmap func() error

	// text is the executable PT_LOAD segment: file offsets for probes are
	// computed through it.
	text *elf.Prog

	mu        sync.Mutex
	table     *pclntab
	tableErr  error
	tableDone bool
	frames    map[uint64][]Frame
	symMu     sync.Mutex // guards symtab: taken while mu may be held
	symtab    *symtab
	symIndex  nameIndex // .symtab by name
	pclnIndex nameIndex // .gopclntab by name

	gofunc     uint64 // address of go:func.*, the base of funcdata offsets
	gofuncDone bool

	mdOnce sync.Once // finds md, for the types
	md     moduleInfo
	mdErr  error

	// closed makes methods fail after Close instead of touching the
	// unmapped file, which would crash rather than panic.
	closed atomic.Bool
}

// Open opens the named Go executable. path may be /proc/PID/exe or a path
// under /proc/PID/root.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var ra io.ReaderAt = fh
	var mapped []byte
	var unmap func() error
	if st, err := fh.Stat(); err == nil && st.Size() > 0 {
		if m, um, err := mmapFile(fh, st.Size()); err == nil {
			mapped, unmap = m, um
			ra = bytes.NewReader(m)
		}
	}
	f, err := newFile(ra)
	if err != nil {
		if unmap != nil {
			unmap()
		}
		fh.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.mapped, f.unmap = mapped, unmap
	f.closer, f.file = fh, fh
	f.Inode = statInode(fh)
	return f, nil
}

// NewFile reads a Go executable from r. The ReaderAt must stay valid until
// the File is no longer used.
func NewFile(r io.ReaderAt) (*File, error) {
	return newFile(r)
}

// Close releases the memory mapping and closes the underlying file if the
// File was created with Open. Afterwards methods fail with os.ErrClosed;
// Close must not run concurrently with them.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return os.ErrClosed
	}
	var err error
	if f.unmap != nil {
		err = f.unmap()
		f.unmap = nil
		f.mapped = nil
	}
	if f.closer != nil {
		if cerr := f.closer.Close(); err == nil {
			err = cerr
		}
		f.closer, f.file = nil, nil
	}
	return err
}

func newFile(r io.ReaderAt) (f *File, err error) {
	defer func() {
		if !catchPanics {
			return
		}
		if p := recover(); p != nil {
			f, err = nil, fmt.Errorf("malformed executable: %v", p)
		}
	}()

	ef, err := elf.NewFile(r)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("%w: %v", ErrNotELF, err)
		}
		return nil, err
	}
	if ef.Class != elf.ELFCLASS64 || ef.Data != elf.ELFDATA2LSB {
		return nil, fmt.Errorf("unsupported ELF class %v %v: only 64-bit little-endian is supported", ef.Class, ef.Data)
	}
	f = &File{
		elf:      ef,
		r:        r,
		Arch:     goarch(ef.Machine),
		PIE:      ef.Type == elf.ET_DYN,
		Stripped: ef.Section(".symtab") == nil,
		HasDWARF: ef.Section(".debug_info") != nil || ef.Section(".zdebug_info") != nil,
	}
	if f.Arch == "" {
		return nil, fmt.Errorf("unsupported machine %v", ef.Machine)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 {
			f.text = p
			break
		}
	}
	bi, biErr := buildinfo.Read(r)
	if biErr == nil {
		f.GoVersion = bi.GoVersion
	}
	if biErr != nil && pclntabSection(ef) == nil {
		return nil, ErrNotGo
	}
	if f.text == nil {
		return nil, errors.New("no executable PT_LOAD segment")
	}
	f.BuildID = f.readBuildID()
	return f, nil
}

func goarch(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "amd64"
	case elf.EM_AARCH64:
		return "arm64"
	case elf.EM_RISCV:
		return "riscv64"
	case elf.EM_PPC64:
		return "ppc64le"
	case elf.EM_LOONGARCH:
		return "loong64"
	}
	return ""
}

// readBuildID returns the Go build ID note's descriptor, or "" if there is
// none (binaries linked by tools other than cmd/link).
func (f *File) readBuildID() string {
	s := f.elf.Section(".note.go.buildid")
	if s == nil || s.Type != elf.SHT_NOTE || s.Size > 1<<12 {
		return ""
	}
	b, err := f.SectionData(s)
	if err != nil || len(b) < 16 {
		return ""
	}
	namesz := binary.LittleEndian.Uint32(b[0:])
	descsz := binary.LittleEndian.Uint32(b[4:])
	typ := binary.LittleEndian.Uint32(b[8:])
	if namesz != 4 || typ != 4 || !bytes.Equal(b[12:16], []byte("Go\x00\x00")) {
		return ""
	}
	if uint64(descsz) > uint64(len(b)-16) {
		return ""
	}
	return string(b[16 : 16+descsz])
}

// ELF returns the executable as debug/elf reads it, for the sections this
// package does not interpret, such as DWARF. It fails with os.ErrClosed
// after Close: the sections then read memory that is no longer mapped.
func (f *File) ELF() (*elf.File, error) {
	if f.closed.Load() {
		return nil, os.ErrClosed
	}
	return f.elf, nil
}

// BuildInfo returns the Go build information the executable carries, which
// stripping keeps: module versions and build settings such as -ldflags.
func (f *File) BuildInfo() (*buildinfo.BuildInfo, error) {
	if f.closed.Load() {
		return nil, os.ErrClosed
	}
	return buildinfo.Read(f.r)
}

// Mapped reports whether the file is memory-mapped: SectionData then returns
// the contents of a section stored uncompressed without reading them.
func (f *File) Mapped() bool { return f.mapped != nil }

// SectionData returns the contents of s, a section of the executable,
// without copying when the file is memory-mapped and s is stored
// uncompressed. The contents are valid until Close.
func (f *File) SectionData(s *elf.Section) ([]byte, error) {
	if f.closed.Load() {
		return nil, os.ErrClosed
	}
	if s.Type == elf.SHT_NOBITS {
		return nil, fmt.Errorf("section %s has no data", s.Name)
	}
	// Older linkers compressed DWARF into .zdebug sections without the flag.
	if f.mapped != nil && s.Flags&elf.SHF_COMPRESSED == 0 && !strings.HasPrefix(s.Name, ".zdebug") {
		if s.Offset > uint64(len(f.mapped)) || s.Size > uint64(len(f.mapped))-s.Offset {
			return nil, fmt.Errorf("section %s: out of file bounds", s.Name)
		}
		return f.mapped[s.Offset : s.Offset+s.Size], nil
	}
	b, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("section %s: %w", s.Name, err)
	}
	return b, nil
}

// maxRead bounds single reads of untrusted sizes (a function body, a table)
// when the file is not memory-mapped.
const maxRead = 1 << 26

// readAt returns n bytes at file offset off.
func (f *File) readAt(off, n uint64) ([]byte, error) {
	if f.mapped != nil {
		if off > uint64(len(f.mapped)) || n > uint64(len(f.mapped))-off {
			return nil, fmt.Errorf("read of %d bytes at offset %#x: out of file bounds", n, off)
		}
		return f.mapped[off : off+n], nil
	}
	if n > maxRead || off > 1<<62 {
		return nil, fmt.Errorf("read of %d bytes at offset %#x: too large", n, off)
	}
	b := make([]byte, n)
	if _, err := f.r.ReadAt(b, int64(off)); err != nil {
		return nil, fmt.Errorf("read of %d bytes at offset %#x: %w", n, off, err)
	}
	return b, nil
}

// TextSegment returns the header of the executable PT_LOAD segment, which
// places the functions' virtual addresses at file offsets.
func (f *File) TextSegment() elf.ProgHeader { return f.text.ProgHeader }

// fileOffset converts a virtual address inside the executable segment to a
// file offset.
func (f *File) fileOffset(v uint64) (uint64, bool) {
	p := f.text
	if v < p.Vaddr || v-p.Vaddr >= p.Filesz {
		return 0, false
	}
	return v - p.Vaddr + p.Off, true
}

// readVaddr reads n bytes at virtual address v from any loadable segment
// backed by file contents.
func (f *File) readVaddr(v, n uint64) ([]byte, error) {
	for _, p := range f.elf.Progs {
		if p.Type != elf.PT_LOAD || v < p.Vaddr || v-p.Vaddr >= p.Filesz {
			continue
		}
		if n > p.Filesz-(v-p.Vaddr) {
			break
		}
		return f.readAt(v-p.Vaddr+p.Off, n)
	}
	return nil, fmt.Errorf("address %#x (+%d) is not backed by the file", v, n)
}

// pclntabSection returns the section holding the pclntab: position
// independent executables of Go before 1.26 keep it in relocated read-only
// data.
func pclntabSection(ef *elf.File) *elf.Section {
	if s := ef.Section(".gopclntab"); s != nil {
		return s
	}
	return ef.Section(".data.rel.ro.gopclntab")
}
