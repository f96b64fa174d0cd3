package testagent

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// FutureGoVersion is a Go release no table of the tracer knows, as long as
// the local toolchain's: go1.26.8 becomes go1.99.8.
func FutureGoVersion() string {
	return "go1.99" + runtime.Version()[len("go1.26"):]
}

// WithGoVersion returns a copy of the agent built by the local toolchain at
// path whose build information names Go release v, which must be as long
// as the local toolchain's version: a build of a release the tracer does
// not know. Stripped and unstripped builds patched alike still share their
// fingerprint.
func WithGoVersion(tb testing.TB, path, v string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	ef, err := elf.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	s := ef.Section(".go.buildinfo")
	ef.Close()
	if s == nil {
		tb.Fatalf("%s: no .go.buildinfo", path)
	}
	old := runtime.Version()
	sect := b[s.Offset : s.Offset+s.Size]
	i := bytes.Index(sect, []byte(old))
	if i < 0 || len(v) != len(old) {
		tb.Fatalf("%s: cannot replace %s by %s in the build information", path, old, v)
	}
	copy(sect[i:], v)
	out := filepath.Join(tb.TempDir(), "cilium-agent")
	if err := os.WriteFile(out, b, 0o755); err != nil {
		tb.Fatal(err)
	}
	return out
}
