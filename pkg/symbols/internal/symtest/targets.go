package symtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// A Target is one build of testdata/target.
type Target struct {
	Toolchain string // GOTOOLCHAIN value; "local" is the toolchain running the tests
	GOARCH    string
	PIE       bool
	Stripped  bool
	External  bool // cgo and the external linker
	// RandLayout shuffles the functions (-ldflags=-randlayout, Go 1.23+):
	// an ABI0 wrapper can then come before its body.
	RandLayout bool

	Path string
}

func (t *Target) String() string {
	s := t.Toolchain + "/" + t.GOARCH
	if t.PIE {
		s += "/pie"
	}
	if t.External {
		s += "/external"
	}
	if t.RandLayout {
		s += "/randlayout"
	}
	if t.Stripped {
		s += "/stripped"
	}
	return s
}

// GoVersion is the version the binary reports.
func (t *Target) GoVersion() string {
	if t.Toolchain == "local" {
		return runtime.Version()
	}
	return t.Toolchain
}

// Toolchains the tests build with. The full matrix (PIE or not, stripped or
// not, amd64 and arm64) runs on the local toolchain and on the two releases
// named in the requirements; the others are built plainly to check the goid
// offset table; older ones, whose pclntab layouts differ and which
// distributions still ship, are built for amd64 stripped and not, and for
// arm64.
var (
	fullToolchains  = []string{"local", "go1.22.12", "go1.21.13"}
	plainToolchains = []string{"go1.23.0", "go1.24.0", "go1.25.0"}
	OldToolchains   = []string{"go1.20.14", "go1.18.10"}
)

var (
	buildOnce sync.Once
	targets   []*Target
	buildErr  error
)

// Targets builds every target once per test binary.
func Targets(t testing.TB) []*Target {
	t.Helper()
	buildOnce.Do(func() { buildErr = buildTargets() })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return targets
}

// FindTarget returns the build with the given properties.
func FindTarget(t testing.TB, toolchain, goarch string, pie, stripped bool) *Target {
	t.Helper()
	if tg := lookup(t, Target{Toolchain: toolchain, GOARCH: goarch, PIE: pie, Stripped: stripped}); tg != nil {
		return tg
	}
	t.Fatalf("no target %s/%s pie=%v stripped=%v", toolchain, goarch, pie, stripped)
	return nil
}

// lookup returns the build with want's properties, or nil.
func lookup(t testing.TB, want Target) *Target {
	for _, tg := range Targets(t) {
		if tg.Toolchain == want.Toolchain && tg.GOARCH == want.GOARCH && tg.PIE == want.PIE && tg.Stripped == want.Stripped && tg.External == want.External && tg.RandLayout == want.RandLayout {
			return tg
		}
	}
	return nil
}

// StrippedSibling returns the stripped build of tg's configuration, or nil.
func StrippedSibling(t testing.TB, tg *Target) *Target {
	want := *tg
	want.Stripped = true
	return lookup(t, want)
}

// buildTargets builds into a directory under the user's cache keyed by the
// target's source, so that later runs and the worker processes of `go test
// -fuzz` reuse the binaries.
func buildTargets() error {
	main, err := os.ReadFile(targetSource())
	if err != nil {
		return err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return err
	}
	// The local toolchain's version is part of the key: its builds change
	// with it.
	sum := sha256.Sum256(append(main, runtime.Version()...))
	dir := filepath.Join(cache, "cilium-tracer-symbols-test", hex.EncodeToString(sum[:8]))
	src, err := os.MkdirTemp("", "symbols-target-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), main, 0o644); err != nil {
		return err
	}
	// A module of its own, outside this repository's go.mod, which older
	// toolchains cannot read.
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module target\n\ngo 1.21\n"), 0o644); err != nil {
		return err
	}
	for _, tc := range fullToolchains {
		for _, arch := range []string{"amd64", "arm64"} {
			for _, pie := range []bool{false, true} {
				if pie && arch == "arm64" {
					continue
				}
				for _, stripped := range []bool{false, true} {
					targets = append(targets, &Target{Toolchain: tc, GOARCH: arch, PIE: pie, Stripped: stripped})
				}
			}
		}
	}
	// cgo binaries linked by gcc: C code in .text, .gopclntab placed by the
	// external linker.
	for _, tc := range []string{"local", "go1.22.12"} {
		for _, v := range []struct{ pie, stripped bool }{{false, false}, {false, true}, {true, false}, {true, true}} {
			targets = append(targets, &Target{Toolchain: tc, GOARCH: "amd64", PIE: v.pie, Stripped: v.stripped, External: true})
		}
	}
	for _, arch := range []string{"amd64", "arm64"} {
		for _, stripped := range []bool{false, true} {
			targets = append(targets, &Target{Toolchain: "local", GOARCH: arch, Stripped: stripped, RandLayout: true})
		}
	}
	for _, tc := range plainToolchains {
		for _, arch := range []string{"amd64", "arm64"} {
			targets = append(targets, &Target{Toolchain: tc, GOARCH: arch})
		}
	}
	for _, tc := range OldToolchains {
		targets = append(targets,
			&Target{Toolchain: tc, GOARCH: "amd64"},
			&Target{Toolchain: tc, GOARCH: "amd64", Stripped: true},
			&Target{Toolchain: tc, GOARCH: "arm64"})
	}
	// Builds are mostly linking; two at a time keeps a shared machine usable.
	sem := make(chan struct{}, 2)
	errs := make(chan error, len(targets))
	var wg sync.WaitGroup
	for _, tg := range targets {
		tg.Path = filepath.Join(dir, strings.ReplaceAll(tg.String(), "/", "-"))
		if _, err := os.Stat(tg.Path); err == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			tmp := tg.Path + ".tmp" + strconv.Itoa(os.Getpid())
			args := []string{"build", "-o", tmp}
			if tg.PIE {
				args = append(args, "-buildmode=pie")
			}
			var ldflags []string
			if tg.Stripped {
				ldflags = append(ldflags, "-s", "-w")
			}
			cgo := "0"
			if tg.External {
				ldflags = append(ldflags, "-linkmode=external")
				cgo = "1"
			}
			if tg.RandLayout {
				ldflags = append(ldflags, "-randlayout=1")
			}
			if len(ldflags) > 0 {
				args = append(args, "-ldflags="+strings.Join(ldflags, " "))
			}
			cmd := exec.Command("go", args...)
			cmd.Dir = src
			cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+tg.Toolchain, "GOOS=linux", "GOARCH="+tg.GOARCH, "CGO_ENABLED="+cgo, "GOFLAGS=")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("build %s: %v\n%s", tg, err, out)
				return
			}
			if err := os.Rename(tmp, tg.Path); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
