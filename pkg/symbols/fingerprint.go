package symbols

import (
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
)

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
