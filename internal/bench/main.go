// Command bench measures what tracing costs: the overhead per traced call
// side by side with bare uprobes and bpftrace, the user-space pipeline's
// throughput from ring-buffer records to ClickHouse blocks, and the cost of
// attaching to a large binary. It prints a table and rewrites
// BENCHMARKS.md. Run it as root through `make bench`.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	var (
		quick  = flag.Bool("quick", false, "tiny runs that only check every benchmark works; the numbers mean nothing")
		out    = flag.String("out", "", "write the report here (default: BENCHMARKS.md at the repository root; none with -quick)")
		rounds = flag.Int("rounds", 7, "overhead rounds; each runs every mode once")
		record = flag.Bool("record", false, "record the pipeline's test data from a traced run of the example agent, then exit")
	)
	flag.Parse()
	maybeAttachChild()
	if err := run(*quick, *out, *rounds, *record, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run(quick bool, out string, rounds int, record bool, w io.Writer) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (uprobes and BPF)")
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	if record {
		return recordPipeline(root, tmp, w)
	}

	r := report{Machine: describeMachine(root), Quick: quick}
	ocfg := overheadConfig{Rounds: rounds, PlainCalls: 50_000_000, TraceCalls: 50_000}
	if quick {
		ocfg = overheadConfig{Rounds: 1, PlainCalls: 10_000, TraceCalls: 200}
	}

	fmt.Fprintf(w, "overhead: %d rounds, %d calls untraced, %d traced per run\n", ocfg.Rounds, ocfg.PlainCalls, ocfg.TraceCalls)
	hot, err := buildHot(root, tmp)
	if err != nil {
		return err
	}
	if r.Overhead, err = runOverhead(hot, ocfg, w); err != nil {
		return err
	}

	fmt.Fprintln(w, "\npipeline: recorded samples -> decode -> calls -> spans -> ClickHouse blocks, one core")
	data, err := loadPipeline(root, tmp)
	if err != nil {
		return err
	}
	defer data.File.Close()
	if r.Pipeline, err = benchPipeline(data, quick); err != nil {
		return err
	}

	attachRuns, symbolizePCs := 3, 20_000
	if quick {
		attachRuns, symbolizePCs = 1, 500
	}
	fmt.Fprintf(w, "\nattach: %d functions of a large binary, %d fresh processes per build\n", attachFuncs, attachRuns)
	bins, err := buildBig(root, tmp)
	if err != nil {
		return err
	}
	if r.Attach, err = benchAttach(bins, attachRuns, symbolizePCs, w); err != nil {
		return err
	}

	fmt.Fprintln(w)
	r.writeTable(w)
	if out == "" && !quick {
		out = filepath.Join(root, "BENCHMARKS.md")
	}
	if out != "" {
		if err := os.WriteFile(out, []byte(r.markdown()), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nwrote %s\n", out)
	}
	return nil
}

// repoRoot is the directory of the tracer's go.mod.
func repoRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run inside the tracer's module")
	}
	return filepath.Dir(mod), nil
}

// machine describes where the numbers were measured.
type machine struct {
	Commit    string
	CPU       string
	Cores     int
	Kernel    string
	GoVersion string
	Bpftrace  string
	// UprobeMulti: the kernel has uprobe_multi links (Linux 6.6+).
	UprobeMulti bool
	Date        time.Time
}
