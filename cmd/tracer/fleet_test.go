package main_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	chproto "github.com/ClickHouse/ch-go/proto"

	"github.com/cilium-tracer/tracer/internal/capacity"
	"github.com/cilium-tracer/tracer/internal/chtest"
	"github.com/cilium-tracer/tracer/internal/promtext"
	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/export"
)

// Fleet simulation: the sizes of the test, scaled to two cores.
const (
	fleetNodes = 20
	// fleetJitter stands for jitter.start, whose default (0) is for
	// interactive use and whose production values (20m at 1,000 nodes)
	// do not fit a test.
	fleetJitter = 10 * time.Second
	fleetWindow = 12 * time.Second // over which the rates are measured
	fleetOutage = 30 * time.Second
)

// The regeneration functions the agent counts, each traced by every
// daemon.
var fleetFuncs = []string{
	testagent.Regenerate, testagent.RegenerateBPF, testagent.SyncPolicyMap, testagent.ResolvePolicy,
	testagent.Upsert, testagent.Allocate, testagent.DumpToSlice, testagent.CompileAndLoad,
}

// fleetNode is one node: a stand-in agent and the daemon tracing it.
type fleetNode struct {
	agent   *testagent.Agent
	config  string
	metrics string // http://host:port
	cmd     *exec.Cmd
	exited  chan struct{}
	stderr  *lockedBuffer
}

func (n *fleetNode) start(t *testing.T) {
	t.Helper()
	n.cmd = exec.Command(tracerBin, "daemon", "--config", n.config)
	n.stderr = &lockedBuffer{}
	n.cmd.Stderr = n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	n.exited = exited
	cmd := n.cmd
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
}

// stop ends the daemon as a node shutdown does, and checks that it exits 0.
func (n *fleetNode) stop(t *testing.T) {
	t.Helper()
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon of agent %d still running 30s after SIGTERM", n.agent.PID)
	}
	if !n.cmd.ProcessState.Success() {
		t.Fatalf("daemon of agent %d: %v\n%s", n.agent.PID, n.cmd.ProcessState, n.stderr)
	}
}

func (n *fleetNode) running() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// read reads the daemon's /metrics.
func (n *fleetNode) read() (map[string]float64, error) {
	return promtext.Get(n.metrics + "/metrics")
}

func (n *fleetNode) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	m, err := n.read()
	if err != nil {
		t.Fatalf("daemon of agent %d: %v\n%s", n.agent.PID, err, n.stderr)
	}
	return m
}

const (
	exported = `tracer_exporter_spans_total{exporter="clickhouse",outcome="exported"}`
	failed   = `tracer_exporter_spans_total{exporter="clickhouse",outcome="failed"}`
	dropped  = `tracer_exporter_spans_total{exporter="clickhouse",outcome="dropped"}`
	refused  = `tracer_export_refused_total`
	received = `tracer_export_received_total`
	pending  = `tracer_export_queue_pending`
)

// lost is what a daemon counted as lost: failed exports, exporter queue
// full, pipeline queue full.
func lost(m map[string]float64) float64 { return m[failed] + m[dropped] + m[refused] }

// traced is the agent's count of the calls the daemons trace.
func traced(r testagent.Report) uint64 {
	var n uint64
	for _, fn := range fleetFuncs {
		n += r.Counts[fn]
	}
	return n
}

// rowsOf counts the server's rows of the agent with host PID pid whose
// calls started in [from, to).
func rowsOf(rows []chtest.Row, pid int, from, to time.Time) int {
	p := strconv.Itoa(pid)
	n := 0
	for _, r := range rows {
		if r.ResourceAttributes["process.pid"] == p && !r.Timestamp.Before(from) && r.Timestamp.Before(to) {
			n++
		}
	}
	return n
}

// rawBytes is a row's size uncompressed: its values as the native format
// lays them out (strings with a length byte, fixed-size numbers).
func rawBytes(r chtest.Row) int {
	n := 8 + 8 // Timestamp, Duration
	for _, s := range []string{r.TraceID, r.SpanID, r.ParentSpanID, r.TraceState, r.SpanName, r.SpanKind,
		r.ServiceName, r.ScopeName, r.ScopeVersion, r.StatusCode, r.StatusMessage} {
		n += 1 + len(s)
	}
	for _, m := range []map[string]string{r.ResourceAttributes, r.SpanAttributes} {
		n += 8 // offset
		for k, v := range m {
			n += 2 + len(k) + len(v)
		}
	}
	return n + 7*8 // the empty Events and Links arrays' offsets
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestFleet runs a fleet of daemons, each a process of its own tracing a
// stand-in agent of its own, all exporting to one ClickHouse (the test
// server) with jittered starts. Against the agents' own counts it checks
// the aggregate rate the capacity model predicts, each daemon's rate
// against its limit, a 30 s ClickHouse outage (losses bounded and counted,
// export resumes without a restart), and that a simultaneous restart of
// the fleet spreads its connections over the jitter window.
func TestFleet(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	srv := chtest.New(t, 25, 8)
	dir := t.TempDir()
	var probes strings.Builder
	for _, fn := range fleetFuncs {
		fmt.Fprintf(&probes, "  - func: %q\n", fn)
	}
	nodes := make([]*fleetNode, fleetNodes)
	for i := range nodes {
		// A light workload, which the default budget admits whole: what
		// the server receives is then what the agents counted. No
		// panics: a panicking call is reported only when it expires.
		a := testagent.Start(t, bin, "-workers", "1", "-interval", "1s", "-policy-depth", "2", "-panic-every", "0")
		addr := freeAddr(t)
		cfg := filepath.Join(dir, fmt.Sprintf("node-%d.yaml", i))
		// Default settings, but for the target, the exporter, the jitter
		// window, the metrics address and the cost of a traced call:
		// twenty daemons measuring it at once on two busy cores find it
		// 20 to 30 times what one node measures alone (28.6-50 µs with
		// stacks here), and the governor would hold each node to a
		// twentieth of its budget.
		yaml := fmt.Sprintf("target: {pid: %d}\nprobes:\n%sstacks: true\nexporters: [{clickhouse: {addrs: [%q]}}]\ngovernor: {hit_cost: 50us}\njitter: {start: %v}\nmetrics: {listen: %q}\n",
			a.PID, probes.String(), srv.Addr(), fleetJitter, addr)
		if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		nodes[i] = &fleetNode{agent: a, config: cfg, metrics: "http://" + addr}
	}
	for _, n := range nodes {
		n.start(t)
	}

	// Every daemon has attached and exported.
	deadline := time.Now().Add(fleetJitter + 30*time.Second)
	for _, n := range nodes {
		for {
			if !n.running() {
				t.Fatalf("daemon of agent %d exited:\n%s", n.agent.PID, n.stderr)
			}
			if m, err := n.read(); err == nil && m[exported] > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("daemon of agent %d exported nothing:\n%s", n.agent.PID, n.stderr)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// The rate, per node and in all, from the agents' own counts.
	t1 := make([]time.Time, len(nodes))
	r1 := make([]testagent.Report, len(nodes))
	for i, n := range nodes {
		t1[i], r1[i] = time.Now(), n.agent.Report(t)
	}
	bytes1, _ := srv.Received(), srv.RowCount()
	_, rowsBefore := srv.Snapshot()
	time.Sleep(fleetWindow)
	t2 := make([]time.Time, len(nodes))
	r2 := make([]testagent.Report, len(nodes))
	for i, n := range nodes {
		t2[i], r2[i] = time.Now(), n.agent.Report(t)
	}
	bytes2, _ := srv.Received(), srv.RowCount()
	_, rowsAfter := srv.Snapshot()
	// Spans of calls made up to t2 reach the server within a batch
	// timeout.
	time.Sleep(3 * time.Second)
	_, rows := srv.Snapshot()

	var made, seen float64
	for i, n := range nodes {
		secs := t2[i].Sub(t1[i]).Seconds()
		rate := float64(traced(r2[i])-traced(r1[i])) / secs
		got := float64(rowsOf(rows, n.agent.PID, t1[i], t2[i])) / secs
		made += rate
		seen += got
		m := n.scrape(t)
		limit := m["tracer_overhead_budget_cpus"] / m["tracer_call_cost_seconds"]
		if got > limit {
			t.Errorf("daemon of agent %d exported %.1f spans/s, over its limit of %.1f", n.agent.PID, got, limit)
		}
		if i == 0 {
			t.Logf("node 0: agent made %.1f traced calls/s, server got %.1f spans/s, limit %.0f spans/s (budget %.3f CPU, %v per call)",
				rate, got, limit, m["tracer_overhead_budget_cpus"], time.Duration(m["tracer_call_cost_seconds"]*1e9))
		}
	}
	node := capacity.Node{Rate: made / fleetNodes, BatchSize: 512, BatchTimeout: time.Second, StartJitter: fleetJitter}
	predicted := capacity.Model(node, capacity.Published, fleetNodes).Spans
	t.Logf("aggregate: model predicts %.1f spans/s from the agents' counts, the server saw %.1f (%+.1f%%)", predicted, seen, 100*(seen/predicted-1))
	if math.Abs(seen/predicted-1) > 0.2 {
		t.Errorf("server saw %.1f spans/s, the model predicts %.1f", seen, predicted)
	}
	windowRows := rowsAfter[len(rowsBefore):]
	raw := 0
	for _, r := range windowRows {
		raw += rawBytes(r)
	}
	t.Logf("on the wire: %.0f B/span LZ4 (%d B for %d spans), %.0f B/span raw; %.2f rows per INSERT",
		float64(bytes2-bytes1)/float64(len(windowRows)), bytes2-bytes1, len(windowRows),
		float64(raw)/float64(len(windowRows)), node.RowsPerInsert(node.Rate))

	// A 30 s outage. The calls a daemon traced are those its pipeline
	// received: the governor may have left some of the agent's calls
	// untraced, which is no export loss.
	scrapeAll := func(at []time.Time) []map[string]float64 {
		ms := make([]map[string]float64, len(nodes))
		for i, n := range nodes {
			at[i], ms[i] = time.Now(), n.scrape(t)
		}
		return ms
	}
	down, up, end := make([]time.Time, len(nodes)), make([]time.Time, len(nodes)), make([]time.Time, len(nodes))
	before := scrapeAll(down)
	srv.Stop()
	var maxPending float64
	for range 2 {
		time.Sleep(fleetOutage / 2)
		for _, n := range nodes {
			maxPending = max(maxPending, n.scrape(t)[pending])
		}
	}
	atUp := scrapeAll(up)
	srv.Start()

	// Export resumes by itself: each daemon's spans of calls made after
	// the outage reach the server.
	deadline = time.Now().Add(20 * time.Second)
	for i, n := range nodes {
		for {
			_, rows := srv.Snapshot()
			if rowsOf(rows, n.agent.PID, up[i], time.Now()) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("daemon of agent %d: no span after the outage\n%s", n.agent.PID, n.stderr)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// A daemon exports its batches in order: those held through the
	// outage have been delivered or given up by now.
	after := scrapeAll(end)
	time.Sleep(3 * time.Second)
	_, rows = srv.Snapshot()
	var allLost, allCounted, allOutage float64
	for i, n := range nodes {
		if !n.running() {
			t.Fatalf("daemon of agent %d exited during the outage:\n%s", n.agent.PID, n.stderr)
		}
		got := after[i][received] - before[i][received]
		delivered := float64(rowsOf(rows, n.agent.PID, down[i], end[i]))
		lostHere := got - delivered
		counted := lost(after[i]) - lost(before[i])
		// What the outage may cost: the calls traced while it lasted,
		// and a batch of calls traced before it, which was being sent.
		during := atUp[i][received] - before[i][received]
		batch := node.RowsPerInsert(got / end[i].Sub(down[i]).Seconds())
		allLost, allCounted, allOutage = allLost+lostHere, allCounted+counted, allOutage+during
		if lostHere > during+batch {
			t.Errorf("daemon of agent %d lost %.0f spans, more than the %.0f traced during the outage and one batch", n.agent.PID, lostHere, during+batch)
		}
		// Each call either reached the server or was counted lost, but
		// for the calls of a regeneration that straddles a window's edge
		// (12), and a batch that reached the server as it went away and
		// was counted failed, its reply lost.
		const edge = 12
		if lostHere > counted+edge || counted > lostHere+batch+edge {
			t.Errorf("daemon of agent %d: %.0f calls traced, %.0f delivered, %.0f lost but %.0f counted lost", n.agent.PID, got, delivered, lostHere, counted)
		}
	}
	// The daemon's pipeline: default sizes, one exporter.
	p := export.NewPipeline(export.NewSpanBuilder(export.Resource{}), map[string]export.Exporter{"clickhouse": discard{}}, export.PipelineConfig{})
	bound := p.MaxPending()
	p.Shutdown(context.Background())
	t.Logf("outage %v: %.0f spans traced during it, %.0f lost, %.0f counted lost (failed, dropped, refused); max pending %.0f (bound %d)",
		fleetOutage, allOutage, allLost, allCounted, maxPending, bound)
	if maxPending > float64(bound) {
		t.Errorf("a daemon held %.0f spans, more than its bound %d", maxPending, bound)
	}

	// A simultaneous restart: every daemon stops, then all start at once.
	for _, n := range nodes {
		n.stop(t)
	}
	restart := time.Now()
	for _, n := range nodes {
		n.start(t)
	}
	var offsets []time.Duration
	deadline = time.Now().Add(fleetJitter + 20*time.Second)
	for len(offsets) < fleetNodes {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections after the restart, want %d", len(offsets), fleetNodes)
		}
		time.Sleep(200 * time.Millisecond)
		offsets = offsets[:0]
		// A daemon connects twice: for the schema (clickhouse-go), then
		// for its INSERTs (ch-go). Its INSERT connection stands for it.
		hellos := srv.Hellos()
		for i, c := range srv.Connects() {
			if c.After(restart) && strings.HasPrefix(hellos[i].Name, chproto.Name) {
				offsets = append(offsets, c.Sub(restart))
			}
		}
	}
	offsets = offsets[:fleetNodes]
	checkSpread(t, offsets, fleetJitter, 8*time.Second)
}

// checkSpread tests connection times, as offsets from a simultaneous
// restart, against the start jitter: each daemon waits a uniform random
// time in [0, window), then up to delay more to start, attach and fill its
// first batch. A Kolmogorov-Smirnov test against that band, at the 1%
// level: the empirical distribution may lie no further than the critical
// distance below the distribution of the jitter plus the most delay, nor
// above that of the jitter alone. A thundering herd, all connecting within
// a moment, lies far above it, or spans too little of the window.
func checkSpread(t *testing.T, offsets []time.Duration, window, delay time.Duration) {
	t.Helper()
	slices.Sort(offsets)
	n := float64(len(offsets))
	crit := 1.63 / math.Sqrt(n)
	uniform := func(x time.Duration) float64 { return min(max(x.Seconds()/window.Seconds(), 0), 1) }
	early, late := math.Inf(-1), math.Inf(-1)
	for i, x := range offsets {
		early = max(early, float64(i+1)/n-uniform(x))
		late = max(late, uniform(x-delay)-float64(i)/n)
	}
	buckets := make([]int, int((window+delay)/(2*time.Second))+1)
	for _, x := range offsets {
		buckets[min(int(x/(2*time.Second)), len(buckets)-1)]++
	}
	t.Logf("connections after the restart: first %v, median %v, last %v; per 2 s: %v; KS distance above the jitter's distribution %.3f, below the delayed one %.3f (critical %.3f)",
		offsets[0].Round(time.Millisecond), offsets[len(offsets)/2].Round(time.Millisecond), offsets[len(offsets)-1].Round(time.Millisecond), buckets, early, late, crit)
	if early > crit || late > crit {
		t.Errorf("connections are not spread over the %v jitter window: KS distances %.3f and %.3f, critical %.3f", window, early, late, crit)
	}
	// Twenty uniform draws span less than half their window with
	// probability 20·2⁻¹⁹.
	if spread := offsets[len(offsets)-1] - offsets[0]; spread < window/2 {
		t.Errorf("connections within %v of each other, less than half the %v jitter window", spread, window)
	}
	if last := offsets[len(offsets)-1]; last > window+delay {
		t.Errorf("a daemon connected %v after the restart, later than the window %v and %v to start", last, window, delay)
	}
}

type discard struct{}

func (discard) Export(context.Context, []export.Span) error { return nil }
func (discard) Shutdown(context.Context) error              { return nil }
