package symbols

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

// A target is one build of testdata/target.
type target struct {
	toolchain string // GOTOOLCHAIN value; "local" is the toolchain running the tests
	goarch    string
	pie       bool
	stripped  bool
	external  bool // cgo and the external linker
	// randlayout shuffles the functions (-ldflags=-randlayout, Go 1.23+):
	// an ABI0 wrapper can then come before its body.
	randlayout bool

	path string
}

func (t *target) String() string {
	s := t.toolchain + "/" + t.goarch
	if t.pie {
		s += "/pie"
	}
	if t.external {
		s += "/external"
	}
	if t.randlayout {
		s += "/randlayout"
	}
	if t.stripped {
		s += "/stripped"
	}
	return s
}

// goVersion is the version the binary reports.
func (t *target) goVersion() string {
	if t.toolchain == "local" {
		return runtime.Version()
	}
	return t.toolchain
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
	oldToolchains   = []string{"go1.20.14", "go1.18.10"}
)

var (
	buildOnce sync.Once
	targets   []*target
	buildErr  error
)

// allTargets builds every target once per test binary.
func allTargets(t testing.TB) []*target {
	t.Helper()
	buildOnce.Do(func() { buildErr = buildTargets() })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return targets
}

// findTarget returns the build with the given properties.
func findTarget(t testing.TB, toolchain, goarch string, pie, stripped bool) *target {
	t.Helper()
	if tg := lookupTarget(t, toolchain, goarch, pie, stripped); tg != nil {
		return tg
	}
	t.Fatalf("no target %s/%s pie=%v stripped=%v", toolchain, goarch, pie, stripped)
	return nil
}

func lookupTarget(t testing.TB, toolchain, goarch string, pie, stripped bool) *target {
	return lookup(t, target{toolchain: toolchain, goarch: goarch, pie: pie, stripped: stripped})
}

// lookup returns the build with want's properties, or nil.
func lookup(t testing.TB, want target) *target {
	for _, tg := range allTargets(t) {
		if tg.toolchain == want.toolchain && tg.goarch == want.goarch && tg.pie == want.pie && tg.stripped == want.stripped && tg.external == want.external && tg.randlayout == want.randlayout {
			return tg
		}
	}
	return nil
}

// strippedSibling returns the stripped build of tg's configuration, or nil.
func strippedSibling(t testing.TB, tg *target) *target {
	want := *tg
	want.stripped = true
	return lookup(t, want)
}

// buildTargets builds into a directory under the user's cache keyed by the
// target's source, so that later runs and the worker processes of `go test
// -fuzz` reuse the binaries.
func buildTargets() error {
	main, err := os.ReadFile("testdata/target/main.go")
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
					targets = append(targets, &target{toolchain: tc, goarch: arch, pie: pie, stripped: stripped})
				}
			}
		}
	}
	// cgo binaries linked by gcc: C code in .text, .gopclntab placed by the
	// external linker.
	for _, tc := range []string{"local", "go1.22.12"} {
		for _, v := range []struct{ pie, stripped bool }{{false, false}, {false, true}, {true, false}, {true, true}} {
			targets = append(targets, &target{toolchain: tc, goarch: "amd64", pie: v.pie, stripped: v.stripped, external: true})
		}
	}
	for _, arch := range []string{"amd64", "arm64"} {
		for _, stripped := range []bool{false, true} {
			targets = append(targets, &target{toolchain: "local", goarch: arch, stripped: stripped, randlayout: true})
		}
	}
	for _, tc := range plainToolchains {
		for _, arch := range []string{"amd64", "arm64"} {
			targets = append(targets, &target{toolchain: tc, goarch: arch})
		}
	}
	for _, tc := range oldToolchains {
		targets = append(targets,
			&target{toolchain: tc, goarch: "amd64"},
			&target{toolchain: tc, goarch: "amd64", stripped: true},
			&target{toolchain: tc, goarch: "arm64"})
	}
	// Builds are mostly linking; two at a time keeps a shared machine usable.
	sem := make(chan struct{}, 2)
	errs := make(chan error, len(targets))
	var wg sync.WaitGroup
	for _, tg := range targets {
		tg.path = filepath.Join(dir, strings.ReplaceAll(tg.String(), "/", "-"))
		if _, err := os.Stat(tg.path); err == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			tmp := tg.path + ".tmp" + strconv.Itoa(os.Getpid())
			args := []string{"build", "-o", tmp}
			if tg.pie {
				args = append(args, "-buildmode=pie")
			}
			var ldflags []string
			if tg.stripped {
				ldflags = append(ldflags, "-s", "-w")
			}
			cgo := "0"
			if tg.external {
				ldflags = append(ldflags, "-linkmode=external")
				cgo = "1"
			}
			if tg.randlayout {
				ldflags = append(ldflags, "-randlayout=1")
			}
			if len(ldflags) > 0 {
				args = append(args, "-ldflags="+strings.Join(ldflags, " "))
			}
			cmd := exec.Command("go", args...)
			cmd.Dir = src
			cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+tg.toolchain, "GOOS=linux", "GOARCH="+tg.goarch, "CGO_ENABLED="+cgo, "GOFLAGS=")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("build %s: %v\n%s", tg, err, out)
				return
			}
			if err := os.Rename(tmp, tg.path); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func openTarget(t testing.TB, tg *target) *File {
	t.Helper()
	f, err := Open(tg.path)
	if err != nil {
		t.Fatalf("%s: %v", tg, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
