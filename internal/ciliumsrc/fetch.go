package ciliumsrc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// CacheDir is the module cache sources are downloaded into: the tracer's
// own, under the user cache directory, so that the generator and the tests
// share it without putting dozens of cilium releases in the machine's
// module cache. Its files are writable (-modcacherw): rm -rf removes it.
func CacheDir() (string, error) {
	c, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(c, "tracer", "gomod"), nil
}

// A Module is one module version, downloaded and unpacked.
type Module struct {
	Path    string
	Version string
	Dir     string
}

var downloads struct {
	sync.Mutex
	done map[string]Module
}

// Download fetches path@version through the Go module proxy with the go
// command, which checks it against the checksum database, into CacheDir.
// Each module is downloaded once per process.
func Download(ctx context.Context, path, version string) (Module, error) {
	key := path + "@" + version
	downloads.Lock()
	defer downloads.Unlock()
	if m, ok := downloads.done[key]; ok {
		return m, nil
	}
	cache, err := CacheDir()
	if err != nil {
		return Module{}, err
	}
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", key)
	// Outside any module: the tracer's go.mod has nothing to say here.
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOMODCACHE="+cache, "GOFLAGS=-modcacherw", "GOWORK=off")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var out struct{ Dir, Error string }
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || out.Error != "" || out.Dir == "" || runErr != nil {
		msg := strings.TrimSpace(out.Error)
		if msg == "" {
			msg = strings.TrimSpace(stderr.String())
		}
		if msg == "" && runErr != nil {
			msg = runErr.Error()
		}
		return Module{}, fmt.Errorf("go mod download %s: %s", key, msg)
	}
	m := Module{Path: path, Version: version, Dir: out.Dir}
	if downloads.done == nil {
		downloads.done = map[string]Module{}
	}
	downloads.done[key] = m
	return m, nil
}

// stdReleases are the Go releases whose standard library stands for their
// minor: the layouts of its types do not change within a minor release.
// They are the releases the tests already build their targets with.
var stdReleases = map[int]string{
	22: "go1.22.12",
	23: "go1.23.0",
	24: "go1.24.0",
	25: "go1.25.0",
	26: "go1.26.8",
}

// GoMinors are the Go minor releases the standard library is known for.
func GoMinors() []int {
	return []int{22, 23, 24, 25, 26}
}

// A StdLib is the standard library of one Go release and the build tags its
// go command sets for linux on an architecture.
type StdLib struct {
	Minor   int
	Release string
	Root    string // GOROOT
	tags    map[string][]string
}

var stdlibs struct {
	sync.Mutex
	done map[int]*StdLib
}

// Std returns the standard library of Go 1.minor: that of the running go
// command when it is that release, else the release's toolchain module from
// the Go module proxy.
func Std(ctx context.Context, minor int) (*StdLib, error) {
	stdlibs.Lock()
	defer stdlibs.Unlock()
	if s, ok := stdlibs.done[minor]; ok {
		return s, nil
	}
	release, ok := stdReleases[minor]
	if !ok {
		return nil, fmt.Errorf("no standard library known for go1.%d", minor)
	}
	s := &StdLib{Minor: minor, Release: release, tags: map[string][]string{}}
	local, err := goEnv(ctx, "", "GOVERSION", "GOROOT")
	if err != nil {
		return nil, err
	}
	if local[0] == release {
		s.Root = local[1]
	} else {
		m, err := Download(ctx, "golang.org/toolchain", "v0.0.1-"+release+"."+runtime.GOOS+"-"+runtime.GOARCH)
		if err != nil {
			return nil, err
		}
		s.Root = m.Dir
		// The module cache keeps no execute bits; the go command that
		// switches toolchains sets them itself, and so must this.
		if err := os.Chmod(filepath.Join(s.Root, "bin", "go"), 0o755); err != nil {
			return nil, err
		}
	}
	if stdlibs.done == nil {
		stdlibs.done = map[int]*StdLib{}
	}
	stdlibs.done[minor] = s
	return s, nil
}

// buildTags returns the release and tool tags (the default GOEXPERIMENTs,
// the architecture level) the release's go command sets for linux/arch: a
// file such as sync's hashtriemap.go is chosen by them.
func (s *StdLib) buildTags(ctx context.Context, arch string) ([]string, error) {
	if t, ok := s.tags[arch]; ok {
		return t, nil
	}
	out, err := goEnvWith(ctx, s.Root, []string{"GOOS=linux", "GOARCH=" + arch, "GOTOOLCHAIN=local", "GOROOT=" + s.Root, "GOFLAGS=", "GOEXPERIMENT="},
		"list", "-f", "{{join context.ReleaseTags \",\"}};{{join context.ToolTags \",\"}}", "runtime")
	if err != nil {
		return nil, err
	}
	release, tool, _ := strings.Cut(strings.TrimSpace(out), ";")
	tags := append(strings.Split(release, ","), strings.Split(tool, ",")...)
	s.tags[arch] = tags
	return tags, nil
}

// goEnv returns go env values, with the go command of root ("" for the one
// in PATH).
func goEnv(ctx context.Context, root string, keys ...string) ([]string, error) {
	out, err := goEnvWith(ctx, root, nil, append([]string{"env"}, keys...)...)
	if err != nil {
		return nil, err
	}
	vals := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(vals) != len(keys) {
		return nil, fmt.Errorf("go env %s: %q", strings.Join(keys, " "), out)
	}
	return vals, nil
}

func goEnvWith(ctx context.Context, root string, env []string, args ...string) (string, error) {
	bin := "go"
	if root != "" {
		bin = filepath.Join(root, "bin", "go")
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = os.TempDir()
	cmd.Env = append(append(os.Environ(), "GOWORK=off"), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
