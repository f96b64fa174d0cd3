// Package tracer_test checks the repository's layout: that data flows one
// way through the pipeline's packages, and that make test reaches every
// module in the repository.
package tracer_test

import (
	"bufio"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/cilium-tracer/tracer"

// order is the pipeline, first stage first; after it come the packages
// that compose stages. A package may import its own stage and earlier ones.
var order = []string{
	"target",
	"symbols",
	"probes",
	"calls",
	"spans",
	"exporters",
	"session",
	"daemon",
	"commands",
	"tools",
}

// stages places each package of the module by directory: a package belongs
// to the longest entry that is its directory or a parent of it, so a split
// of pkg/symbols stays in the symbols stage unless it gets an entry of its
// own. A new package outside every entry fails the test until it is placed.
var stages = map[string]string{
	"pkg/container": "target",
	"pkg/symbols":   "symbols",
	"pkg/goroutine": "symbols", // reads the target's memory beside its executable
	"pkg/presets":   "symbols", // what to probe and capture, read from the executable
	"bpf/uprobes":   "probes",  // the BPF objects pkg/probe loads
	"bpf/syscalls":  "probes",  // the BPF objects pkg/probe/syscalls loads
	"pkg/probe":     "probes",
	"pkg/calls":     "calls",
	"pkg/export":    "exporters", // builds the spans, then exports them
	"pkg/session":   "session",
	"pkg/daemon":    "daemon",
	"cmd":           "commands",
	"internal":      "tools", // test helpers and the benchmark
	"examples":      "tools",
}

// stageOf returns the stage of the package in directory dir (relative to the
// module root) and its index in order, or "" if no entry places it.
func stageOf(dir string) (string, int) {
	for d := dir; d != "."; d = filepath.Dir(d) {
		if s, ok := stages[d]; ok {
			return s, slices.Index(order, s)
		}
	}
	return "", -1
}

// TestStageOrder fails if a package imports one of a later stage. Only the
// packages' own imports count: a test may import whatever it checks against
// (pkg/export's tests run a receiver from internal/otlptest) without the
// code depending on it. Imports are listed for each architecture the tracer
// builds for, since files such as the disassemblers are per architecture.
func TestStageOrder(t *testing.T) {
	for _, s := range stages {
		if !slices.Contains(order, s) {
			t.Fatalf("stages names %q, which order does not list", s)
		}
	}
	// Each problem once, with the architectures it shows on.
	problems := map[string][]string{}
	for _, arch := range []string{"amd64", "arm64"} {
		cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list (GOARCH=%s): %v\n%s", arch, err, stderr(err))
		}
		for line := range strings.Lines(string(out)) {
			fields := strings.Fields(line)
			pkg := rel(fields[0])
			if pkg == "." {
				continue // this test's own package
			}
			stage, rank := stageOf(pkg)
			if stage == "" {
				p := fmt.Sprintf("%s belongs to no stage: place it in the stages table of layout_test.go", pkg)
				problems[p] = append(problems[p], arch)
				continue
			}
			for _, imp := range fields[1:] {
				if imp != module && !strings.HasPrefix(imp, module+"/") {
					continue
				}
				impStage, impRank := stageOf(rel(imp))
				if impRank > rank {
					p := fmt.Sprintf("%s (%s) imports %s (%s), a later stage", pkg, stage, rel(imp), impStage)
					problems[p] = append(problems[p], arch)
				}
			}
		}
	}
	for _, p := range slices.Sorted(maps.Keys(problems)) {
		t.Errorf("%s (GOARCH %s)", p, strings.Join(problems[p], ", "))
	}
	if t.Failed() {
		t.Logf("stages in order: %s", strings.Join(order, " -> "))
	}
}

// TestModulesInMakefile fails if a go.mod in the repository is missing from
// the Makefile's MODULES, whose tests make test runs: go test ./... stops at
// a nested module's root, so its tests would be skipped without a word.
func TestModulesInMakefile(t *testing.T) {
	listed := makefileModules(t)
	var found []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// testdata holds build inputs, not modules make test should enter.
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.Name() == "go.mod" && path != "go.mod" {
			found = append(found, filepath.Dir(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range found {
		if !slices.Contains(listed, m) {
			t.Errorf("%s/go.mod makes a module of its own, but the Makefile's MODULES does not list it: make test would skip its tests", m)
		}
	}
	for _, m := range listed {
		if !slices.Contains(found, m) {
			t.Errorf("the Makefile's MODULES lists %s, which has no go.mod", m)
		}
	}
}

// makefileModules returns the directories the Makefile's MODULES lists.
func makefileModules(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("Makefile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MODULES :="); ok {
			return strings.Fields(v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatal("the Makefile has no line MODULES := ...")
	return nil
}

// rel is a package's directory relative to the module root.
func rel(pkg string) string {
	if pkg == module {
		return "."
	}
	return strings.TrimPrefix(pkg, module+"/")
}

func stderr(err error) []byte {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.Stderr
	}
	return nil
}
