// Command bench measures what tracing costs: the overhead per traced call
// side by side with bare uprobes and bpftrace, the user-space pipeline's
// throughput from ring-buffer records to ClickHouse blocks, and the cost of
// attaching to a large binary and to the real cilium-agent. It prints a
// table and rewrites BENCHMARKS.md. Run it as root through `make bench`;
// `make bench BENCHFLAGS=-only=cilium` runs one section and writes nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cilium-tracer/tracer/internal/ciliumlab"
)

func main() {
	var (
		quick      = flag.Bool("quick", false, "tiny runs that only check every benchmark works; the numbers mean nothing")
		out        = flag.String("out", "", "write the report here (default: BENCHMARKS.md at the repository root; none with -quick)")
		rounds     = flag.Int("rounds", 7, "overhead rounds; each runs every mode once")
		budgetReps = flag.Int("budget-reps", 3, "budget repetitions; each runs every mode once: at the default budget the added CPU is near the untraced runs' own spread, which more repetitions narrow")
		record     = flag.Bool("record", false, "record the pipeline's test data from a traced run of the example agent, then exit")
		only       = flag.String("only", "", "run only these `sections`, comma-separated: "+strings.Join(allSections, ", ")+"; the report is then written only to -out")
	)
	flag.Parse()
	if *rounds < 1 || *budgetReps < 1 {
		fmt.Fprintf(os.Stderr, "bench: -rounds %d and -budget-reps %d must be at least 1\n", *rounds, *budgetReps)
		os.Exit(2)
	}
	maybeAttachChild()
	maybeExportChild()
	sections := slices.DeleteFunc(slices.Clone(allSections), func(s string) bool { return slices.Contains(optInSections, s) })
	if *only != "" {
		sections = strings.Split(*only, ",")
		for _, s := range sections {
			if !slices.Contains(allSections, s) {
				fmt.Fprintf(os.Stderr, "bench: unknown section %q (have %s)\n", s, strings.Join(allSections, ", "))
				os.Exit(2)
			}
		}
	}
	if err := run(*quick, *out, *rounds, *budgetReps, *record, sections, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// allSections are the benchmarks, in the order they run and are reported.
var allSections = []string{"overhead", "syscalls", "pipeline", "attach", "cilium", "breakdown", "budget"}

// optInSections run only when named in -only: they take many minutes.
var optInSections = []string{"budget"}

// run runs the benchmarks of sections and writes the report to out; with
// every section and not quick, by default to BENCHMARKS.md.
func run(quick bool, out string, rounds, budgetReps int, record bool, sections []string, w io.Writer) error {
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
	if slices.Contains(sections, "overhead") {
		ocfg := overheadConfig{Rounds: rounds, PlainCalls: 50_000_000, TraceCalls: 50_000}
		if quick {
			ocfg = overheadConfig{Rounds: 1, PlainCalls: 10_000, TraceCalls: 200}
		}
		fmt.Fprintf(w, "overhead: %d rounds, %d calls untraced, %d traced per run\n", ocfg.Rounds, ocfg.PlainCalls, ocfg.TraceCalls)
		hot, err := buildTestdata(root, tmp, "hot")
		if err != nil {
			return err
		}
		if r.Overhead, err = runOverhead(hot, ocfg, w); err != nil {
			return err
		}
	}

	if slices.Contains(sections, "syscalls") {
		rounds, n := rounds, 200_000
		if quick {
			rounds, n = 1, 1000
		}
		fmt.Fprintf(w, "\nsyscalls: %d rounds, %d getppid(2) per run\n", rounds, n)
		bin, err := buildTestdata(root, tmp, "syscalls")
		if err != nil {
			return err
		}
		if r.Syscalls, err = runSyscalls(bin, rounds, n, w); err != nil {
			return err
		}
	}

	if slices.Contains(sections, "pipeline") {
		fmt.Fprintln(w, "\npipeline: recorded samples -> decode -> calls -> spans -> ClickHouse blocks, one core")
		data, err := loadPipeline(root, tmp)
		if err != nil {
			return err
		}
		defer data.File.Close()
		if r.Pipeline, err = benchPipeline(data, quick); err != nil {
			return err
		}
		reps, minSeconds := 3, 2.0
		if quick {
			reps, minSeconds = 1, 0
		}
		fmt.Fprintln(w, "\nexport: the same spans to the test ClickHouse server through the tracer's exporter and the collector's, one core each")
		if r.Compare, err = benchCompare(root, tmp, data, reps, minSeconds, w); err != nil {
			return err
		}
	}

	attachRuns, symbolizePCs := 3, 20_000
	if quick {
		attachRuns, symbolizePCs = 1, 500
	}
	if slices.Contains(sections, "attach") {
		fmt.Fprintf(w, "\nattach: %d functions of a large binary, %d fresh processes per build\n", attachFuncs, attachRuns)
		bins, err := buildBig(root, tmp)
		if err != nil {
			return err
		}
		if r.Attach, err = benchAttach(bins, attachRuns, symbolizePCs, w); err != nil {
			return err
		}
	}

	if slices.Contains(sections, "cilium") {
		fmt.Fprintf(w, "\ncilium: attach to the real cilium-agent %s, %d fresh processes per build\n", ciliumlab.Pinned, attachRuns)
		if r.Cilium, err = benchCilium(context.Background(), tmp, attachRuns, w); err != nil {
			return err
		}
	}

	if slices.Contains(sections, "breakdown") {
		reps := 3
		if quick {
			reps = 1
		}
		fmt.Fprintf(w, "\nbreakdown: phased calls of the stand-in agent, with and without sampling, %d interleaved repetitions\n", reps)
		if r.Breakdown, err = benchBreakdown(root, tmp, phasedLoads(quick), reps, w); err != nil {
			return err
		}
	}

	if slices.Contains(sections, "budget") {
		reps := budgetReps
		if quick {
			reps = 1
		}
		fmt.Fprintf(w, "\nbudget: the real cilium-agent %s, untraced and under tracer daemon, %d interleaved repetitions\n", ciliumlab.Pinned, reps)
		if r.Budget, err = benchBudget(context.Background(), tmp, reps, w); err != nil {
			return err
		}
	}

	fmt.Fprintln(w)
	r.writeTable(w)
	if out == "" && !quick && len(sections) == len(allSections)-len(optInSections) && !slices.Contains(sections, "budget") {
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
