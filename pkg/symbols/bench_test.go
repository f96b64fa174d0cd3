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
	"time"
)

var (
	bigOnce sync.Once
	bigPath string
	bigErr  error
)

// benchBinary returns a large stripped Go executable: $SYMBOLS_BENCH_BINARY
// (point it at a real cilium-agent), else testdata/big, which links much of
// this module's dependency graph (~26 MB).
func benchBinary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("SYMBOLS_BENCH_BINARY"); p != "" {
		return p
	}
	bigOnce.Do(func() { bigPath, bigErr = buildBig() })
	if bigErr != nil {
		tb.Fatal(bigErr)
	}
	return bigPath
}

func buildBig() (string, error) {
	src, err := os.ReadFile("testdata/big/main.go")
	if err != nil {
		return "", err
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		return "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append(append(src, gomod...), runtime.Version()...))
	dir := filepath.Join(cache, "cilium-tracer-symbols-test", "big-"+hex.EncodeToString(sum[:8]))
	path := filepath.Join(dir, "big")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", tmp, "./testdata/big")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build testdata/big: %v\n%s", err, out)
	}
	return path, os.Rename(tmp, path)
}

// benchNames picks 20 functions spread over the binary that decode cleanly,
// as a user tracing a handful of functions would.
func benchNames(tb testing.TB, path string) []string {
	tb.Helper()
	f, err := Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	all, err := f.Funcs("*")
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for i := 0; i < len(all) && len(names) < 20; i += len(all)/40 + 1 {
		fn := all[i]
		if fn.End-fn.Entry < 64 || strings.HasSuffix(fn.Name, abi0Suffix) {
			continue
		}
		if _, err := f.ReturnOffsets(fn); err == nil {
			names = append(names, fn.Name)
		}
	}
	if len(names) < 20 {
		tb.Fatalf("only %d usable functions in %s", len(names), path)
	}
	return names
}

// openResolve is what `tracer trace` does before attaching: open the
// binary, resolve each function, find its returns.
func openResolve(path string, names []string) (rets int, err error) {
	f, err := Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	for _, name := range names {
		fns, err := f.Funcs(name)
		if err != nil {
			return 0, err
		}
		for _, fn := range fns {
			offs, err := f.ReturnOffsets(fn)
			if err != nil {
				return 0, err
			}
			rets += len(offs)
		}
	}
	return rets, nil
}

func BenchmarkOpenResolve(b *testing.B) {
	path := benchBinary(b)
	names := benchNames(b, path)
	for b.Loop() {
		if _, err := openResolve(path, names); err != nil {
			b.Fatal(err)
		}
	}
}

// Opening a 50-130 MB binary, resolving 20 functions and scanning their
// returns must take well under 300 ms and 80 MiB: the tracer does it while
// the user waits, on nodes that also run the agent. A fresh process measures
// time and peak RSS without the test framework's own allocations.
func TestOpenResolveBudget(t *testing.T) {
	if os.Getenv("SYMBOLS_BUDGET_CHILD") != "" {
		names := strings.Split(os.Getenv("SYMBOLS_BUDGET_NAMES"), "\n")
		start := time.Now()
		rets, err := openResolve(os.Getenv("SYMBOLS_BUDGET_BINARY"), names)
		elapsed := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		status, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		hwm := ""
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				hwm = strings.TrimSuffix(strings.TrimSpace(v), " kB")
			}
		}
		fmt.Printf("budget elapsed_ns=%d hwm_kb=%s rets=%d\n", elapsed.Nanoseconds(), hwm, rets)
		return
	}
	path := benchBinary(t)
	names := benchNames(t, path)
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenResolveBudget$", "-test.v")
	cmd.Env = append(os.Environ(), "SYMBOLS_BUDGET_CHILD=1", "SYMBOLS_BUDGET_BINARY="+path, "SYMBOLS_BUDGET_NAMES="+strings.Join(names, "\n"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var elapsedNS, hwmKB, rets int64
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "budget ") {
			fmt.Sscanf(line, "budget elapsed_ns=%d hwm_kb=%d rets=%d", &elapsedNS, &hwmKB, &rets)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Duration(elapsedNS)
	t.Logf("%s (%d MB): open + resolve %d functions + %d RETs in %v, peak RSS %d MiB", path, st.Size()>>20, len(names), rets, elapsed, hwmKB>>10)
	if elapsed == 0 || rets == 0 {
		t.Fatalf("child reported nothing:\n%s", out)
	}
	if hwmKB > 80<<10 {
		t.Errorf("peak RSS %d MiB, budget 80 MiB", hwmKB>>10)
	}
}

// BenchmarkFrames measures symbolizing one PC without the cache: the cost of
// the first sight of each PC of a stack.
func BenchmarkFrames(b *testing.B) {
	f, err := Open(benchBinary(b))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	t, err := f.pcln()
	if err != nil {
		b.Fatal(err)
	}
	var pcs []uint64
	for i := 0; i < t.nfunc; i += t.nfunc/1000 + 1 {
		if entry, end := t.entry(i), t.codeEnd(i); end > entry {
			pcs = append(pcs, entry+(end-entry)/2)
		}
	}
	i := 0
	for b.Loop() {
		if f.frames1(t, pcs[i%len(pcs)]) == nil {
			b.Fatalf("no frames at %#x", pcs[i%len(pcs)])
		}
		i++
	}
}
