package offsets

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// A stripped build of a release the table does not know gets its goid
// offset from the offsets file made on the unstripped build, which has
// DWARF; without one, or with one from another build, GoidOffsetFrom says
// why. A release candidate is its release.
func TestGoidOffsetFromOffsetsFile(t *testing.T) {
	f, sf := openAgent(t, "agent"), openAgent(t, "agent-stripped")
	want := symtest.DWARFFieldOffset(t, symtest.Agent(t, "agent"), "runtime.g", "goid")
	release := sf.GoVersion
	for _, v := range []string{"go1.27.0", "go1.27rc1", "devel go1.27-abcdef0 Mon Jan 5 00:00:00 2026 +0000"} {
		// The fingerprint reads the build information itself, not
		// GoVersion: the file still matches the build.
		f.GoVersion, sf.GoVersion = v, v
		if _, err := GoidOffset(sf); !errors.Is(err, ErrUnknownGoVersion) {
			t.Errorf("%s: GoidOffset: %v, want ErrUnknownGoVersion", v, err)
		}
		if _, err := GoidOffsetFrom(sf, nil); !errors.Is(err, ErrUnknownGoVersion) {
			t.Errorf("%s: GoidOffsetFrom(nil): %v, want ErrUnknownGoVersion", v, err)
		}
		o, err := New(f, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		back := roundTrip(t, o)
		if got, err := GoidOffsetFrom(sf, back); err != nil || got != want {
			t.Errorf("%s: GoidOffsetFrom(offsets file) = %d, %v; DWARF says %d", v, got, err, want)
		}
		back.GoidOffset = 0
		if _, err := GoidOffsetFrom(sf, back); !errors.Is(err, ErrUnknownGoVersion) || !strings.Contains(err.Error(), "nor does the offsets file") {
			t.Errorf("%s: offsets file without goid_offset: %v", v, err)
		}
	}

	// An offsets file of another build cannot supply it.
	other := openSelf(t)
	o, err := New(other, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GoidOffsetFrom(sf, o); !errors.Is(err, ErrUnknownGoVersion) || !strings.Contains(err.Error(), ErrMismatch.Error()) {
		t.Errorf("offsets file of another build: %v", err)
	}

	// A release candidate of a known release uses its table entry.
	minor, ok := symbols.GoMinor(release)
	if !ok {
		t.Fatalf("release %s unknown", release)
	}
	sf.GoVersion = fmt.Sprintf("go1.%drc1", minor)
	if got, err := GoidOffset(sf); err != nil || got != want {
		t.Errorf("%s: GoidOffset() = %d, %v; DWARF of the release says %d", sf.GoVersion, got, err, want)
	}

	for _, bad := range []string{`{"fingerprint":"x","goid_offset":3}`, `{"fingerprint":"x","goid_offset":8192}`} {
		if _, err := Read(strings.NewReader(bad)); err == nil {
			t.Errorf("Read(%s): no error", bad)
		}
	}
}

func TestGoidOffset(t *testing.T) {
	fromDWARF := make(map[string]uint64) // by toolchain
	for _, tg := range symtest.Targets(t) {
		if tg.Stripped {
			continue
		}
		f := symtest.Open(t, tg.Path, symbols.Open)
		d := symtest.DWARFFieldOffset(t, tg.Path, "runtime.g", "goid")
		got, err := GoidOffset(f)
		if err != nil || got != d {
			t.Errorf("%s: GoidOffset() = %d, %v; DWARF says %d", tg, got, err, d)
		}
		fromDWARF[tg.Toolchain] = d
		// Without DWARF the table must agree.
		f.HasDWARF = false
		got, err = GoidOffset(f)
		if err != nil || got != d {
			t.Errorf("%s: GoidOffset() from the table = %d, %v; DWARF says %d", tg, got, err, d)
		}
	}
	for _, tg := range symtest.Targets(t) {
		if !tg.Stripped {
			continue
		}
		got, err := GoidOffset(symtest.Open(t, tg.Path, symbols.Open))
		if err != nil || got != fromDWARF[tg.Toolchain] {
			t.Errorf("%s: GoidOffset() = %d, %v; want %d", tg, got, err, fromDWARF[tg.Toolchain])
		}
	}
	f := symtest.Open(t, symtest.FindTarget(t, "local", "amd64", false, true).Path, symbols.Open)
	f.GoVersion = "go1.99.1"
	if _, err := GoidOffset(f); !errors.Is(err, ErrUnknownGoVersion) {
		t.Errorf("GoidOffset for go1.99.1: %v, want ErrUnknownGoVersion", err)
	}
}
