package ciliumlab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// Versions the end-to-end tests run: the pinned release the tracer is
// developed against, and the newest v1.17 that can be verified, so a drift
// in cilium's internals between minors fails a test. (v1.17.17 is on the
// module proxy, but the checksum database answered 404 for it on
// 2026-11-30, and an unverified module is not built.)
const (
	Pinned   = "v1.18.5"
	Previous = "v1.17.16"
)

// Binaries is one cached build of a cilium version.
type Binaries struct {
	Version string // cilium version, e.g. v1.18.5
	Dir     string // cache directory of this version and Go toolchain

	Agent         string // cilium-agent, with symbols and DWARF
	AgentStripped string // cilium-agent built with -ldflags='-s -w', as releases are
	CNI           string // cilium-cni
	Dbg           string // cilium-dbg
	LibDir        string // the agent's --lib-dir: the module's bpf/ sources for the datapath
	PathDir       string // put first in the agent's PATH: clang, llc, cilium-health-responder
}

// llvm is the LLVM the datapath is compiled with: cilium v1.17 and v1.18
// need >= 18.1, and Debian ships 19 as clang-19/llc-19.
var llvm = []string{"/usr/lib/llvm-19/bin", "/usr/bin"}

// Build builds the cilium binaries of version from its module on the Go
// module proxy, once: the result is cached under the user's cache
// directory, keyed by the cilium version and the Go toolchain, and a second
// call returns it at once. Concurrent callers wait for the first. Progress
// goes to log. About 15 minutes per version on two cores.
func Build(ctx context.Context, version string, log io.Writer) (*Binaries, error) {
	if !regexp.MustCompile(`^v1\.[0-9]+\.[0-9]+$`).MatchString(version) {
		return nil, fmt.Errorf("cilium version %q: want a release such as %s", version, Pinned)
	}
	goVersion, err := goEnv(ctx, "GOVERSION")
	if err != nil {
		return nil, err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, "tracer", "cilium", version+"-"+goVersion)
	b := &Binaries{
		Version: version,
		Dir:     dir,
		Agent:   filepath.Join(dir, "cilium-agent"),
		// Named cilium-agent too: the /proc scan, `tracer targets` and
		// --follow find the agent by that name.
		AgentStripped: filepath.Join(dir, "stripped", "cilium-agent"),
		CNI:           filepath.Join(dir, "cilium-cni"),
		Dbg:           filepath.Join(dir, "cilium-dbg"),
		LibDir:        filepath.Join(dir, "src"),
		PathDir:       filepath.Join(dir, "path"),
	}
	if err := os.MkdirAll(filepath.Dir(b.AgentStripped), 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	done := filepath.Join(dir, "done")
	if d, err := os.ReadFile(done); err == nil && strings.HasPrefix(string(d), recipe+"\n") {
		return b, b.tools()
	}
	start := time.Now()
	fmt.Fprintf(log, "ciliumlab: building cilium %s with %s into %s (once; about 15 minutes)\n", version, goVersion, dir)
	if err := b.build(ctx, log); err != nil {
		return nil, fmt.Errorf("build cilium %s: %w", version, err)
	}
	if err := b.tools(); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "ciliumlab: built cilium %s in %s\n", version, time.Since(start).Round(time.Second))
	return b, os.WriteFile(done, []byte(recipe+"\n"+time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644)
}

// recipe names how the cached binaries were made; a cache made by another
// recipe is built again.
const recipe = "recipe 2: trimpath, apimachinery unreplaced, missing /proc/modules allowed"

// patches are the source changes the lab needs, each applied where its
// file has the old text. A file with neither the old nor the new text
// fails the build: the recipe no longer fits the release.
var patches = []struct{ file, old, new, why string }{{
	// cilium v1.17 reads /proc/modules at start and exits without it; a
	// kernel built without module support (CONFIG_MODULES=n, as these
	// VMs' are) has none, and loads none. v1.18 no longer reads it.
	file: "pkg/datapath/linux/modules/modules_linux.go",
	old: `	fModules, err := os.Open(loadedModulesFilepath)
	if err != nil {`,
	new: `	fModules, err := os.Open(loadedModulesFilepath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {`,
}}

func patch(src string) error {
	for _, p := range patches {
		path := filepath.Join(src, p.file)
		b, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte(p.old)) {
			return fmt.Errorf("patch %s: the text to change is not there", p.file)
		}
		if err := os.WriteFile(path, bytes.Replace(b, []byte(p.old), []byte(p.new), 1), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (b *Binaries) build(ctx context.Context, log io.Writer) error {
	tmp, err := os.MkdirTemp("", "ciliumlab-download")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dl := exec.CommandContext(ctx, "go", "mod", "download", "-json", "github.com/cilium/cilium@"+b.Version)
	dl.Dir = tmp
	dl.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	var out bytes.Buffer
	dl.Stdout, dl.Stderr = &out, log
	if err := dl.Run(); err != nil {
		return fmt.Errorf("go mod download: %w: %s", err, out.String())
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out.Bytes(), &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("go mod download: %s %s", mod.Error, out.String())
	}
	src := b.LibDir
	if err := os.RemoveAll(src); err != nil {
		return err
	}
	if err := exec.CommandContext(ctx, "cp", "-r", mod.Dir, src).Run(); err != nil {
		return fmt.Errorf("copy module: %w", err)
	}
	if err := exec.CommandContext(ctx, "chmod", "-R", "u+w", src).Run(); err != nil {
		return err
	}
	// cilium replaces k8s.io/apimachinery with its fork, which is not on
	// the module proxy; upstream apimachinery at the required version
	// builds the agent.
	gomod := filepath.Join(src, "go.mod")
	m, err := os.ReadFile(gomod)
	if err != nil {
		return err
	}
	m = regexp.MustCompile(`(?m)^replace k8s\.io/apimachinery .*\n`).ReplaceAll(m, nil)
	if err := os.WriteFile(gomod, m, 0o644); err != nil {
		return err
	}
	if err := patch(src); err != nil {
		return err
	}
	for _, t := range []struct{ out, pkg, ldflags string }{
		{b.Agent, "./daemon", ""},
		{b.AgentStripped, "./daemon", "-s -w"},
		{b.CNI, "./plugins/cilium-cni", ""},
		{b.Dbg, "./cilium-dbg", ""},
		{filepath.Join(b.Dir, "cilium-health-responder"), "./cilium-health/responder", ""},
	} {
		start := time.Now()
		args := []string{"build", "-trimpath", "-o", t.out}
		if t.ldflags != "" {
			args = append(args, "-ldflags="+t.ldflags)
		}
		cmd := exec.CommandContext(ctx, "go", append(args, t.pkg)...)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", t.pkg, err)
		}
		fmt.Fprintf(log, "ciliumlab: %s %s in %s\n", filepath.Base(t.out), t.ldflags, time.Since(start).Round(time.Second))
	}
	return nil
}

// tools makes the directory put first in the agent's PATH: the datapath is
// compiled by running "clang" and "llc", and the health endpoint runs
// "cilium-health-responder".
func (b *Binaries) tools() error {
	if err := os.MkdirAll(b.PathDir, 0o755); err != nil {
		return err
	}
	links := map[string]string{"cilium-health-responder": filepath.Join(b.Dir, "cilium-health-responder")}
	for _, tool := range []string{"clang", "llc"} {
		for _, d := range llvm {
			p := filepath.Join(d, tool)
			if d == "/usr/bin" {
				p += "-19"
			}
			if _, err := os.Stat(p); err == nil {
				links[tool] = p
				break
			}
		}
		if links[tool] == "" {
			return fmt.Errorf("cilium's datapath needs LLVM 19's %s (Debian: apt-get install clang-19 llvm-19)", tool)
		}
	}
	for name, target := range links {
		p := filepath.Join(b.PathDir, name)
		os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	return nil
}

func goEnv(ctx context.Context, key string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", key).Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", key, err)
	}
	return strings.TrimSpace(string(out)), nil
}
