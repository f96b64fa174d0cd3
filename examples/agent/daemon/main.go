// Command cilium-agent impersonates the internals of the real cilium-agent
// for the tracer's tests, demo and benchmarks: the same symbol names, a
// concurrent regeneration workload with known sleeps, recursion, stack
// growth and a panic+recover path, and its own count of every traced call
// as ground truth, and with -measure its own clock around each call of
// some of them. See README.md.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/cilium/pkg/datapath/loader"
	"github.com/cilium/cilium/pkg/endpoint"
	"github.com/cilium/cilium/pkg/groundtruth"
	"github.com/cilium/cilium/pkg/identity/cache"
	"github.com/cilium/cilium/pkg/ipcache"
	"github.com/cilium/cilium/pkg/maps/ctmap"
	"github.com/cilium/cilium/pkg/policy"
	"github.com/cilium/cilium/pkg/torture"
)

// endpointsPerWorker endpoints are regenerated in turn by each worker;
// worker w owns the endpoints with IDs firstEndpointID+endpointsPerWorker*w
// and the next endpointsPerWorker-1.
const (
	endpointsPerWorker = 4
	firstEndpointID    = 1000
	maxWorkers         = (1<<16 - firstEndpointID) / endpointsPerWorker
)

type config struct {
	workers          int
	phased           int
	phases           endpoint.Phases
	iterations       int
	interval         time.Duration
	bpfSleep         time.Duration
	compileSleep     time.Duration
	policyDepth      int
	policySleep      time.Duration
	panicEvery       uint64
	hot              int
	hotBackground    bool
	hotBursts        int
	hotPause         time.Duration
	logRegenerations bool
	failEvery        uint64
	exitCode         int
	logBPF           bool
	startDelay       time.Duration
	waitStart        bool
	measure          bool
	scratchWorkers   int
	scratchCalls     int
	goexitWorkers    int
	recurseDepth     int
	recurseTimes     int
	churn            time.Duration
	churnGoroutines  int
	churnRest        time.Duration
}

var errBadFlag = errors.New("invalid flag value")

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("cilium-agent", flag.ContinueOnError)
	fs.IntVar(&c.workers, "workers", 8, "goroutines regenerating endpoints concurrently")
	fs.IntVar(&c.iterations, "iterations", 0, "regenerations per worker (0: run until SIGTERM/SIGINT)")
	fs.DurationVar(&c.interval, "interval", 100*time.Millisecond, "pause between two regenerations of a worker")
	fs.DurationVar(&c.bpfSleep, "bpf-sleep", 2*time.Millisecond, "sleep in regenerateBPF besides its children")
	fs.DurationVar(&c.compileSleep, "compile-sleep", time.Millisecond, "sleep in compileAndLoad after its stack has grown")
	fs.IntVar(&c.policyDepth, "policy-depth", 10, "recursion depth of resolvePolicyLocked (0: no policy resolution)")
	fs.DurationVar(&c.policySleep, "policy-sleep", time.Millisecond, "sleep in each level of resolvePolicyLocked")
	fs.Uint64Var(&c.panicEvery, "panic-every", 5, "every Nth AllocateIdentity call panics and is recovered (0: never)")
	fs.IntVar(&c.phased, "phased", 0, "before the regenerations, this many calls of regeneratePhased, one after another, each printing what its phases took")
	fs.DurationVar(&c.phases.CPU, "phase-cpu", 30*time.Millisecond, "regeneratePhased: time computing")
	fs.DurationVar(&c.phases.Mutex, "phase-mutex", 40*time.Millisecond, "regeneratePhased: time waiting for a lock another goroutine holds")
	fs.DurationVar(&c.phases.Chan, "phase-chan", 30*time.Millisecond, "regeneratePhased: time waiting on a channel")
	fs.DurationVar(&c.phases.Syscall, "phase-syscall", 30*time.Millisecond, "regeneratePhased: time blocked in read(2)")
	fs.DurationVar(&c.phases.Exec, "phase-exec", 0, "regeneratePhased: then run a child process (this executable) that computes this long (0: none)")
	fs.IntVar(&c.phases.BPFInsns, "phase-bpf-insns", 0, "regeneratePhased: then load a BPF socket filter of this many instructions through bpf(BPF_PROG_LOAD) (0: none)")
	fs.BoolVar(&c.phases.Netlink, "phase-netlink", false, "regeneratePhased: then dump the network links over netlink, counting the messages sent and the reads")
	fs.DurationVar(&c.phases.Detach, "phase-exec-detach", 0, "regeneratePhased: last, start a child process (this executable) that computes this long and return without waiting for it; it is reaped after the call, then a line gives its PID, when starting it began and when the call returned (0: none)")
	fs.IntVar(&c.hot, "hot", 0, "call ctmap lookup N times before the regenerations and print a checksum")
	fs.BoolVar(&c.hotBackground, "hot-background", false, "run the hot loop alongside the regenerations instead of before them")
	fs.IntVar(&c.hotBursts, "hot-bursts", 1, "run the hot loop this many times, -hot-pause apart: a hot path that comes in bursts")
	fs.DurationVar(&c.hotPause, "hot-pause", 500*time.Millisecond, "pause between two -hot-bursts")
	fs.BoolVar(&c.logRegenerations, "log-regenerations", false, "print one line per regeneration with the endpoint's fields")
	fs.Uint64Var(&c.failEvery, "fail-every", 0, "every Nth regenerateBPF call returns an error, of six kinds in turn: *endpoint.compileError, errors.New, fmt.Errorf with %w, *fs.PathError, *os.SyscallError, *exec.ExitError (0: never)")
	fs.IntVar(&c.exitCode, "exit-code", -1, "exit at once with this code: the process -fail-every runs for an *exec.ExitError")
	fs.BoolVar(&c.logBPF, "log-bpf", false, "print one line per regenerateBPF call with the regeneration's number and what it returned")
	fs.DurationVar(&c.startDelay, "start-delay", 0, "wait this long after printing ready before starting, so a tracer can attach")
	fs.BoolVar(&c.waitStart, "wait-start", false, "after printing ready, wait for SIGUSR2 before starting (then -start-delay), so a tracer can attach first")
	fs.BoolVar(&c.measure, "measure", false, "measure each call of resolvePolicyLocked, compileAndLoad and AllocateIdentity and print the durations in the report")
	fs.IntVar(&c.scratchWorkers, "scratch-workers", 0, fmt.Sprintf("before the regenerations, goroutines (at most %d) each calling torture.Traced with its number from a caller function of its own", torture.MaxCallers))
	fs.IntVar(&c.scratchCalls, "scratch-calls", 1000, "calls of torture.Traced per scratch worker")
	fs.IntVar(&c.goexitWorkers, "goexit-workers", 0, "before the regenerations, goroutines that end through Goexit inside torture.Step once a line is read from stdin, then as many new ones that call it and return")
	fs.IntVar(&c.recurseDepth, "recurse-depth", 0, "before the regenerations, recursions of torture.Recurse this deep, each on a new goroutine")
	fs.IntVar(&c.recurseTimes, "recurse-times", 1, "recursions of torture.Recurse")
	fs.DurationVar(&c.churn, "churn", 0, "before the regenerations, rounds of goroutines for this long, each calling torture.Work once, which returns, panics or ends its goroutine through Goexit")
	fs.IntVar(&c.churnGoroutines, "churn-goroutines", 300, "goroutines of each -churn round")
	fs.DurationVar(&c.churnRest, "churn-rest", time.Second, "pause after each -churn round, with untraced goroutines coming and going")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q: %w", fs.Arg(0), errBadFlag)
	}
	switch {
	case c.workers < 0 || c.workers > maxWorkers:
		return config{}, fmt.Errorf("-workers %d not in [0, %d]: %w", c.workers, maxWorkers, errBadFlag)
	case c.iterations < 0:
		return config{}, fmt.Errorf("-iterations %d is negative: %w", c.iterations, errBadFlag)
	case c.policyDepth < 0:
		return config{}, fmt.Errorf("-policy-depth %d is negative: %w", c.policyDepth, errBadFlag)
	case c.scratchWorkers < 0 || c.scratchWorkers > torture.MaxCallers:
		return config{}, fmt.Errorf("-scratch-workers %d not in [0, %d]: %w", c.scratchWorkers, torture.MaxCallers, errBadFlag)
	case c.scratchCalls < 0 || c.goexitWorkers < 0 || c.recurseDepth < 0 || c.recurseTimes < 0 || c.churnGoroutines < 0:
		return config{}, fmt.Errorf("-scratch-calls, -goexit-workers, -recurse-depth, -recurse-times and -churn-goroutines must not be negative: %w", errBadFlag)
	case c.phased < 0 || c.phases.CPU < 0 || c.phases.Mutex < 0 || c.phases.Chan < 0 || c.phases.Syscall < 0 || c.phases.Exec < 0 || c.phases.BPFInsns < 0 || c.phases.Detach < 0:
		return config{}, fmt.Errorf("-phased and the -phase durations must not be negative: %w", errBadFlag)
	case c.hot < 0:
		return config{}, fmt.Errorf("-hot %d is negative: %w", c.hot, errBadFlag)
	case c.hotBursts < 1:
		return config{}, fmt.Errorf("-hot-bursts %d is less than 1: %w", c.hotBursts, errBadFlag)
	case c.hotPause < 0:
		return config{}, fmt.Errorf("-hot-pause %v is negative: %w", c.hotPause, errBadFlag)
	case c.interval < 0 || c.bpfSleep < 0 || c.compileSleep < 0 || c.policySleep < 0 || c.startDelay < 0 || c.churn < 0 || c.churnRest < 0:
		return config{}, fmt.Errorf("durations must not be negative: %w", errBadFlag)
	}
	return c, nil
}

// printer serializes the lines of all goroutines on one writer. Once exit
// has taken the lock, nothing else is printed.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

// The regeneration workers stop between regenerations when the agent is
// asked to exit, and the final report waits for them, as cilium-agent
// finishes the regenerations it started before it shuts down. A report
// taken while they ran would miss calls entered between the report and the
// exit, which a tracer sees: the report would no longer be ground truth.
// So each regeneration holds regenerating for reading, and exit takes it
// for writing and never gives it back.
var regenerating sync.RWMutex

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}

// checksum is the hot loop's result, 0 until it has run.
var checksum atomic.Uint64

func (p *printer) report() {
	p.printf("%s\n", groundtruth.Snapshot(checksum.Load()).JSON())
}

// exit prints the final report and exits 0; concurrent callers block until
// the process is gone, so exactly one final report is printed.
func (p *printer) exit() {
	regenerating.Lock()
	p.mu.Lock()
	fmt.Fprintf(p.w, "%s\n", groundtruth.Snapshot(checksum.Load()).JSON())
	os.Exit(0)
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == endpoint.ChildFlag {
		d, err := time.ParseDuration(os.Args[2])
		if err != nil {
			fmt.Fprintf(os.Stderr, "cilium-agent: %s: %v\n", endpoint.ChildFlag, err)
			os.Exit(2)
		}
		endpoint.Child(d)
		return
	}
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cilium-agent: %v\n", err)
		os.Exit(2)
	}
	if cfg.exitCode >= 0 {
		os.Exit(cfg.exitCode)
	}
	out := &printer{w: os.Stdout}
	if cfg.measure {
		groundtruth.Measure()
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sigs {
			if s != syscall.SIGUSR1 {
				out.exit()
			}
			out.report()
		}
	}()

	start := make(chan os.Signal, 1)
	signal.Notify(start, syscall.SIGUSR2)
	out.printf("ready pid=%d\n", os.Getpid())
	if cfg.waitStart {
		<-start
	}
	time.Sleep(cfg.startDelay)
	run(cfg, out)
	out.exit()
}

// run runs the hot loop, then the regeneration workload, and returns when
// every worker has done its iterations (never if cfg.iterations is 0). With
// cfg.hotBackground the hot loop runs alongside the workload: a hot function
// and cold ones busy at the same time.
func run(cfg config, out *printer) {
	var wg sync.WaitGroup
	hot := func() {
		var sum uint64
		bursts := cfg.hotBursts
		if bursts < 1 {
			bursts = 1
		}
		for i := 0; i < bursts; i++ {
			if i > 0 {
				time.Sleep(cfg.hotPause)
			}
			sum = ctmap.NewMap().Scan(cfg.hot)
		}
		checksum.Store(sum)
		out.printf("hot calls=%d checksum=%d\n", cfg.hot*bursts, sum)
	}
	switch {
	case cfg.hot > 0 && cfg.hotBackground:
		wg.Add(1)
		go func() {
			defer wg.Done()
			hot()
		}()
	case cfg.hot > 0:
		hot()
	}
	if cfg.scratchWorkers > 0 {
		torture.Callers(cfg.scratchWorkers, cfg.scratchCalls)
	}
	if cfg.phased > 0 {
		e := endpoint.New(&endpoint.Owner{}, firstEndpointID, "default", "phased")
		for i := 0; i < cfg.phased; i++ {
			took := e.RegeneratePhased(cfg.phases)
			out.printf("phased %s\n", took)
			if cfg.phases.Netlink {
				out.printf("netlink sends=%d recvs=%d\n", took.NetlinkSends, took.NetlinkRecvs)
			}
			if took.DetachPID != 0 {
				// Between the calls: its exit comes after its call's end
				// and before the next call.
				endpoint.Reap(took.DetachPID)
				out.printf("detached pid=%d start_unix_ns=%d returned_unix_ns=%d\n", took.DetachPID, took.DetachStart.UnixNano(), took.Returned.UnixNano())
			}
		}
	}
	if cfg.recurseDepth > 0 {
		torture.Recursions(cfg.recurseTimes, cfg.recurseDepth)
	}
	if cfg.goexitWorkers > 0 {
		stdin := bufio.NewReader(os.Stdin)
		torture.GoexitReuse(cfg.goexitWorkers,
			func() {
				out.printf("goexit in-flight calls=%d\n", groundtruth.Snapshot(0).Counts[torture.StepName])
			},
			func() { stdin.ReadString('\n') })
	}
	if cfg.churn > 0 {
		rounds := torture.Churn(cfg.churn, cfg.churnGoroutines, cfg.churnRest)
		out.printf("churn rounds=%d\n", rounds)
	}
	if cfg.workers == 0 {
		wg.Wait()
		return
	}

	owner := &endpoint.Owner{
		Repository: policy.NewRepository(cfg.policyDepth, cfg.policySleep),
		IPCache:    ipcache.NewIPCache(),
		Allocator:  cache.NewCachingIdentityAllocator(cfg.panicEvery),
		Loader:     loader.NewLoader(cfg.compileSleep),
		BPFSleep:   cfg.bpfSleep,
		FailEvery:  cfg.failEvery,
	}
	if cfg.logBPF {
		owner.BPFResult = func(seq, revnum uint64, err error) {
			typ, msg := "-", ""
			if err != nil {
				typ, msg = fmt.Sprintf("%T", err), err.Error()
			}
			out.printf("regenerateBPF seq=%d revnum=%d error_type=%s error=%q\n", seq, revnum, typ, msg)
		}
	}
	for w := 0; w < cfg.workers; w++ {
		eps := make([]*endpoint.Endpoint, endpointsPerWorker)
		for j := range eps {
			id := uint16(firstEndpointID + endpointsPerWorker*w + j)
			eps[j] = endpoint.New(owner, id, "default", fmt.Sprintf("xwing-%d", id))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			regenerateLoop(cfg, out, eps)
		}()
	}
	wg.Wait()
}

func regenerateLoop(cfg config, out *printer, eps []*endpoint.Endpoint) {
	for i := 0; cfg.iterations == 0 || i < cfg.iterations; i++ {
		if i > 0 {
			time.Sleep(cfg.interval)
		}
		e := eps[i%len(eps)]
		regenerating.RLock()
		rev := e.Regenerate()
		regenerating.RUnlock()
		if cfg.logRegenerations {
			out.printf("regenerated endpoint_id=%d k8s_pod_name=%s policy_revision=%d\n", e.ID, e.K8sPodName, rev)
		}
	}
}
