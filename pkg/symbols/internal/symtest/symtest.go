// Package symtest holds what the tests of pkg/symbols and its subpackages
// share: the builds of testdata/target over several Go toolchains, the
// builds of the example agent, a reference reading of DWARF through
// debug/dwarf, and the checks every parser's errors must pass. It imports no
// package of the tracer, so that each package's own tests can use it.
package symtest

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// RegenerateBPF is the function of the example agent that the tests resolve
// captures of.
const RegenerateBPF = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF"

// dir is this package's source directory, where testdata is.
func dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

func targetSource() string { return filepath.Join(dir(), "testdata", "target", "main.go") }

// SourceLine returns the line of the target's main.go containing s.
func SourceLine(t testing.TB, s string) int {
	t.Helper()
	src, err := os.ReadFile(targetSource())
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(src), "\n") {
		if strings.Contains(line, s) {
			return i + 1
		}
	}
	t.Fatalf("%q not in main.go", s)
	return 0
}

// Open opens path with open, which is symbols.Open or the like, and closes
// what it opened when the test ends.
func Open[F io.Closer](t testing.TB, path string, open func(string) (F, error)) F {
	t.Helper()
	f, err := open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

var (
	agentOnce sync.Once
	agentDir  string
	agentErr  error
)

// Agent builds examples/agent once per test process, unstripped ("agent"),
// stripped ("agent-stripped") and for arm64 ("agent-arm64"), into a fixed
// directory so reruns overwrite instead of piling up, and returns the path
// of the build named name.
func Agent(t testing.TB, name string) string {
	t.Helper()
	agentOnce.Do(func() {
		agentDir = filepath.Join(os.TempDir(), "tracer-symbols-args-test")
		src := filepath.Join(dir(), "..", "..", "..", "..", "examples", "agent")
		for _, b := range []struct {
			out, goarch string
			flags       []string
		}{
			{"agent", runtime.GOARCH, nil},
			{"agent-stripped", runtime.GOARCH, []string{"-ldflags=-s -w"}},
			{"agent-arm64", "arm64", nil},
		} {
			cmd := exec.Command("go", append(append([]string{"build", "-o", filepath.Join(agentDir, b.out)}, b.flags...), "./daemon")...)
			cmd.Dir = src
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+b.goarch)
			if out, err := cmd.CombinedOutput(); err != nil {
				agentErr = errors.New(string(out))
				return
			}
		}
	})
	if agentErr != nil {
		t.Fatalf("build agent: %v", agentErr)
	}
	return filepath.Join(agentDir, name)
}

// DWARFFieldOffset returns the offset of a member of the named struct type
// as debug/dwarf reads the executable at path, whole and eagerly: the
// reference the tracer's own DWARF reading is checked against.
func DWARFFieldOffset(t testing.TB, path, typ, field string) uint64 {
	t.Helper()
	off, err := dwarfFieldOffset(path, typ, field)
	if err != nil {
		t.Fatal(err)
	}
	return off
}

func dwarfFieldOffset(path, typ, field string) (uint64, error) {
	ef, err := elf.Open(path)
	if err != nil {
		return 0, err
	}
	defer ef.Close()
	d, err := ef.DWARF()
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
			if e.Tag != dwarf.TagCompileUnit {
				r.SkipChildren()
			}
			continue
		}
		t, err := d.Type(e.Offset)
		if err != nil {
			return 0, err
		}
		for _, m := range t.(*dwarf.StructType).Field {
			if m.Name == field {
				return uint64(m.ByteOffset), nil
			}
		}
		return 0, fmt.Errorf("%s.%s not in DWARF", typ, field)
	}
}

// OneLine fails unless err's message is a single line: errors from
// untrusted input go into one-line messages and logs.
func OneLine(t *testing.T, err error) {
	t.Helper()
	if strings.ContainsAny(err.Error(), "\n\r") {
		t.Fatalf("error of several lines: %q", err)
	}
}

// Strings returns the initial value of the [N]string variable name in the
// executable at path, read through debug/elf: its symbol, then each string
// header's pointer and length. The pointers of a position-independent
// executable are dynamic relocations, which debug/elf does not apply: path
// must not be one.
func Strings(t testing.TB, path, name string) []string {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	if ef.Type != elf.ET_EXEC {
		t.Fatalf("%s: not a fixed-address executable", path)
	}
	syms, err := ef.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	read := func(addr, n uint64) []byte {
		for _, p := range ef.Progs {
			if p.Type == elf.PT_LOAD && addr >= p.Vaddr && addr+n <= p.Vaddr+p.Filesz {
				b := make([]byte, n)
				if _, err := p.ReadAt(b, int64(addr-p.Vaddr)); err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
		t.Fatalf("%s: %#x+%d not in the file", path, addr, n)
		return nil
	}
	for _, s := range syms {
		if s.Name != name {
			continue
		}
		var out []string
		arr := read(s.Value, s.Size)
		for i := 0; i+16 <= len(arr); i += 16 {
			p, n := ef.ByteOrder.Uint64(arr[i:]), ef.ByteOrder.Uint64(arr[i+8:])
			if n == 0 {
				out = append(out, "")
				continue
			}
			out = append(out, string(read(p, n)))
		}
		return out
	}
	t.Fatalf("%s: no symbol %s", path, name)
	return nil
}
