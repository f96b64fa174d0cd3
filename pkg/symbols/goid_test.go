package symbols

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// A stripped build of a release the table does not know gets its goid
// offset from the offsets file made on the unstripped build, which has
// DWARF; without one, or with one from another build, GoidOffsetFrom says
// why. A release candidate is its release.
func TestGoidOffsetFromOffsetsFile(t *testing.T) {
	f, _ := openAgent(t, false)
	sf, _ := openAgent(t, true)
	want := symtest.DWARFFieldOffset(t, symtest.Agent(t, "agent"), "runtime.g", "goid")
	release := sf.GoVersion
	for _, v := range []string{"go1.27.0", "go1.27rc1", "devel go1.27-abcdef0 Mon Jan 5 00:00:00 2026 +0000"} {
		// The fingerprint reads the build information itself, not
		// GoVersion: the file still matches the build.
		f.GoVersion, sf.GoVersion = v, v
		if _, err := sf.GoidOffset(); !errors.Is(err, ErrUnknownGoVersion) {
			t.Errorf("%s: GoidOffset: %v, want ErrUnknownGoVersion", v, err)
		}
		if _, err := sf.GoidOffsetFrom(nil); !errors.Is(err, ErrUnknownGoVersion) {
			t.Errorf("%s: GoidOffsetFrom(nil): %v, want ErrUnknownGoVersion", v, err)
		}
		o, err := NewOffsets(f, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		back := roundTrip(t, o)
		if got, err := sf.GoidOffsetFrom(back); err != nil || got != want {
			t.Errorf("%s: GoidOffsetFrom(offsets file) = %d, %v; DWARF says %d", v, got, err, want)
		}
		back.GoidOffset = 0
		if _, err := sf.GoidOffsetFrom(back); !errors.Is(err, ErrUnknownGoVersion) || !strings.Contains(err.Error(), "nor does the offsets file") {
			t.Errorf("%s: offsets file without goid_offset: %v", v, err)
		}
	}

	// An offsets file of another build cannot supply it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	other, err := Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	o, err := NewOffsets(other, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sf.GoidOffsetFrom(o); !errors.Is(err, ErrUnknownGoVersion) || !strings.Contains(err.Error(), ErrOffsetsMismatch.Error()) {
		t.Errorf("offsets file of another build: %v", err)
	}

	// A release candidate of a known release uses its table entry.
	minor, ok := goMinor(release)
	if !ok {
		t.Fatalf("release %s unknown", release)
	}
	sf.GoVersion = fmt.Sprintf("go1.%drc1", minor)
	if got, err := sf.GoidOffset(); err != nil || got != want {
		t.Errorf("%s: GoidOffset() = %d, %v; DWARF of the release says %d", sf.GoVersion, got, err, want)
	}

	for _, bad := range []string{`{"fingerprint":"x","goid_offset":3}`, `{"fingerprint":"x","goid_offset":8192}`} {
		if _, err := ReadOffsets(strings.NewReader(bad)); err == nil {
			t.Errorf("ReadOffsets(%s): no error", bad)
		}
	}
}
