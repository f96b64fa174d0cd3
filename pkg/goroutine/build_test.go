package goroutine

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

// A build is one build of testdata/parked.
type build struct {
	Toolchain string // GOTOOLCHAIN value; "local" is the toolchain running the tests
	GOARCH    string
	PIE       bool
	Stripped  bool
	Path      string
}

func (b *build) String() string {
	s := b.Toolchain + "-" + b.GOARCH
	if b.PIE {
		s += "-pie"
	}
	if b.Stripped {
		s += "-stripped"
	}
	return s
}

// goMinor is the minor release of the toolchain that made b.
func (b *build) goMinor(t *testing.T) int {
	v := b.Toolchain
	if v == "local" {
		v = runtime.Version()
	}
	m, err := strconv.Atoi(strings.Split(v, ".")[1])
	if err != nil {
		t.Fatalf("%s: %v", v, err)
	}
	return m
}

// The toolchains the tests build with: every release of the offsets
// tables but Go 1.19, which its toolchain cannot build here. Each is built
// stripped and not, for amd64 and arm64; the local toolchain and Go 1.22,
// the last release whose entersyscall saves no frame pointer, also as PIEs
// for the host's architecture.
var (
	toolchains    = []string{"local", "go1.25.0", "go1.24.0", "go1.23.0", "go1.22.12", "go1.21.13", "go1.20.14", "go1.18.10"}
	pieToolchains = []string{"local", "go1.22.12"}
)

var (
	buildOnce sync.Once
	builds    []*build
	buildErr  error
)

// otherArch is the architecture of the builds that run under qemu-user: the
// one of amd64 and arm64 the host is not.
func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// allBuilds builds testdata/parked for amd64 and arm64 with every
// toolchain, once per test binary.
func allBuilds(t testing.TB) []*build {
	t.Helper()
	buildOnce.Do(func() { buildErr = buildAll() })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builds
}

func parkedSource() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testdata", "parked")
}

// buildAll builds into a directory under the user's cache keyed by the
// program's source and the local toolchain, so that later runs reuse the
// binaries.
func buildAll() error {
	srcDir := parkedSource()
	entries, err := os.ReadDir(srcDir)
	if err != nil {
		return err
	}
	src, err := os.MkdirTemp("", "parked-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	h := sha256.New()
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(srcDir, e.Name()))
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", e.Name(), len(b))
		h.Write(b)
		if err := os.WriteFile(filepath.Join(src, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	h.Write([]byte(runtime.Version()))
	// A module of its own, which Go 1.18 can read.
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module parked\n\ngo 1.18\n"), 0o644); err != nil {
		return err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return err
	}
	dir := filepath.Join(cache, "cilium-tracer-goroutine-test", hex.EncodeToString(h.Sum(nil)[:8]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, tc := range toolchains {
		for _, stripped := range []bool{false, true} {
			builds = append(builds, &build{Toolchain: tc, GOARCH: runtime.GOARCH, Stripped: stripped})
		}
	}
	for _, tc := range pieToolchains {
		for _, stripped := range []bool{false, true} {
			builds = append(builds, &build{Toolchain: tc, GOARCH: runtime.GOARCH, PIE: true, Stripped: stripped})
		}
	}
	for _, tc := range toolchains {
		for _, stripped := range []bool{false, true} {
			builds = append(builds, &build{Toolchain: tc, GOARCH: otherArch(), Stripped: stripped})
		}
	}
	sem := make(chan struct{}, 2)
	errs := make(chan error, len(builds))
	var wg sync.WaitGroup
	for _, b := range builds {
		b.Path = filepath.Join(dir, b.String())
		if _, err := os.Stat(b.Path); err == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			tmp := b.Path + ".tmp" + strconv.Itoa(os.Getpid())
			args := []string{"build", "-o", tmp}
			if b.PIE {
				args = append(args, "-buildmode=pie")
			}
			if b.Stripped {
				args = append(args, "-ldflags=-s -w")
			}
			cmd := exec.Command("go", args...)
			cmd.Dir = src
			cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+b.Toolchain, "GOOS=linux", "GOARCH="+b.GOARCH, "CGO_ENABLED=0", "GOFLAGS=")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("build %s: %v\n%s", b, err, out)
				return
			}
			if err := os.Rename(tmp, b.Path); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
