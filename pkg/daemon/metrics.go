package daemon

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cilium-tracer/tracer/pkg/probe"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("tracer_"+name, help, labels, nil)
}

var (
	probeHits       = desc("probe_hits_total", "Entry probe hits, sampled or not, while attached.", "function")
	probeReturns    = desc("probe_returns_total", "RET probe hits that completed a traced call, filtered ones included.", "function")
	probeEmitted    = desc("probe_emitted_total", "Calls written to the ring buffer.", "function")
	probeDropped    = desc("probe_dropped_total", "Calls lost because the ring buffer was full.", "function")
	probeUnfinished = desc("probe_unfinished_total", "Calls that ended without a RET: panic, Goexit, or in flight when detached.", "function")
	probeSkipped    = desc("probe_skipped_total", "Entries not sampled.", "function")
	probeFiltered   = desc("probe_filtered_total", "Calls shorter than min_duration, dropped in BPF.", "function")
	probeUntracked  = desc("probe_untracked_total", "Entries not followed: too many traced calls in flight on the goroutine, or the goroutine table full.", "function")
	probeReentered  = desc("probe_reentered_total", "Entries re-fired for a call in flight (stack growth), not counted as calls.", "function")
	probeContended  = desc("probe_contended_total", "Calls traced without stack and captured values: preempted probes held every per-CPU scratch slot.", "function")
	probeUnstacked  = desc("probe_unstacked_total", "Calls traced without stack: the kernel gave no user stack, or the table of stacks refused it.", "function")
	probeTripped    = desc("probe_breaker_trips_total", "Times the probe's breaker tripped in BPF: its hits in one breaker window passed their allowance.", "function")
	probeShed       = desc("probe_shed_total", "Entry hits that only counted: the probe's breaker had tripped and it was not detached yet.", "function")
	probeState      = desc("probe_governor_state", "Governor state of the probe: 1 for the state it is in.", "function", "state")
	probeAttached   = desc("probe_attached", "Whether the probe's entry is attached now.", "function")
	probeRate       = desc("probe_hit_rate", "Entry hits per second, measured while attached.", "function")
	probeDuty       = desc("probe_duty_cycle", "Share of time the probe is attached: 1 when admitted.", "function")
	probeOverhead   = desc("probe_overhead_cpus", "Estimated CPU cost of the probe to the target, in CPUs.", "function")
	probeSample     = desc("probe_sample_every", "1-in-N sampling in force.", "function")

	overheadEstimate = desc("overhead_estimated_cpus", "CPU cost of all probes to the target the governor plans for, in CPUs: each probe at its peak rate over the horizon, times its duty cycle.")
	overheadBudget   = desc("overhead_budget_cpus", "CPU budget of the probes, the daemon and the syscall programs together, in CPUs.")
	overheadTarget   = desc("overhead_target_cpus", "Measured CPU cost of the probes to the target over the last minute, in CPUs: hits times the cost of a traced call.")
	overheadSelf     = desc("overhead_self_cpus", "Measured CPU time of the daemon process over the last minute, in CPUs.")
	overheadNode     = desc("overhead_node_cpus", "Measured CPU cost of the syscall programs (syscalls: true) to the processes of the node over the last minute, in CPUs: their runs at every system call's entry and exit times the cost of a run. The governor cannot throttle them: only syscalls: false ends it.")
	overheadTargetS  = desc("overhead_target_seconds_total", "CPU time the probes cost the target since the daemon started: hits times the cost of a traced call.")
	overheadSelfS    = desc("overhead_self_seconds_total", "CPU time of the daemon process since it started governing.")
	overheadNodeS    = desc("overhead_node_seconds_total", "CPU time the syscall programs cost the processes of the node since the daemon started: runs times the cost of a run.")
	overBudget       = desc("overhead_over_budget", "1 while the measured cost, target, daemon and syscall programs together, is over the budget.")
	decisions        = desc("governor_decisions_total", "Governor decisions: throttle (duty-cycle a probe), readmit, resample (max_events_per_second), trip (a breaker tripped: the probe is detached at once).", "action")
	callCost         = desc("call_cost_seconds", "CPU time one traced call costs (entry and RET traps), measured at start.")
	syscallRunCost   = desc("syscall_run_cost_seconds", "CPU time one run of the syscall programs costs a process they do not follow (two runs per system call), measured before they are first loaded; 0 until then.")

	targetAttached = desc("target_attached", "Whether the daemon is attached to its target.")
	targetPID      = desc("target_pid", "Host PID of the traced process; 0 while waiting for it.")
	reattaches     = desc("target_reattaches_total", "Times the daemon re-attached to a restarted target.")
	goroutineTable = desc("goroutine_table_entries", "Goroutines with traced calls in flight: the fill level of the goroutine table. Calls that never return (Goexit, a panic) stay until expire_after.")
	goroutineCap   = desc("goroutine_table_capacity", "Goroutines the goroutine table holds; entries beyond are counted in tracer_probe_untracked_total.")
	targetGoid     = desc("target_goid_known", "Whether goroutine IDs of the attached target are known: 0 when the goid offset of its Go release is in neither the tracer's table, DWARF, nor the offsets file; spans then have no goroutine.id.")

	exportReceived = desc("export_received_total", "Calls offered to the export pipeline.")
	exportRefused  = desc("export_refused_total", "Calls refused by the export pipeline: queue full.")
	exportPending  = desc("export_queue_pending", "Calls and spans waiting in the export queues.")
	exporterSpans  = desc("exporter_spans_total", "Spans per exporter and outcome: exported, failed (export error) or dropped (queue full).", "exporter", "outcome")
)

// Handler serves /metrics (Prometheus) and /healthz.
func (d *Daemon) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{d},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		d.mu.Lock()
		cur := d.cur
		d.mu.Unlock()
		// Waiting for the target is healthy: the daemon is doing its job.
		switch {
		case cur != nil && cur.s.PID == 0:
			fmt.Fprintf(w, "ok: tracing every process that runs %s\n", cur.s.Binary)
		case cur != nil:
			fmt.Fprintf(w, "ok: tracing PID %d\n", cur.proc.PID)
		default:
			fmt.Fprintln(w, "ok: waiting for the target")
		}
	})
	return mux
}

type collector struct{ d *Daemon }

func (c collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}

	totals := map[string]probe.Counters{}
	for fn, cs := range d.base {
		totals[fn] = cs
	}
	st := d.retired
	pid := 0
	if a := d.cur; a != nil {
		pid = a.proc.PID
		if cs, err := a.s.Counters(); err == nil {
			for fn, cnt := range cs {
				totals[fn] = totals[fn].Add(cnt)
			}
		}
		if n, err := a.s.Set.InFlight(); err == nil {
			gauge(goroutineTable, float64(n))
		}
		gauge(goroutineCap, float64(a.s.Set.GoroutineTableSize()))
		cur := a.pipe.Stats()
		st.Received += cur.Received
		st.Dropped += cur.Dropped
		st.Pending = cur.Pending
		exps := map[string]exporterTotals{}
		for name, e := range d.retired.Exporters {
			exps[name] = exporterTotals{e.Exported, e.Failed, e.Dropped}
		}
		for name, e := range cur.Exporters {
			t := exps[name]
			exps[name] = exporterTotals{t.exported + e.Exported, t.failed + e.Failed, t.dropped + e.Dropped}
		}
		for name, t := range exps {
			counter(exporterSpans, float64(t.exported), name, "exported")
			counter(exporterSpans, float64(t.failed), name, "failed")
			counter(exporterSpans, float64(t.dropped), name, "dropped")
		}
	} else {
		for name, e := range d.retired.Exporters {
			counter(exporterSpans, float64(e.Exported), name, "exported")
			counter(exporterSpans, float64(e.Failed), name, "failed")
			counter(exporterSpans, float64(e.Dropped), name, "dropped")
		}
	}
	for fn, t := range totals {
		counter(probeHits, float64(t.Hits), fn)
		counter(probeReturns, float64(t.Returns), fn)
		counter(probeEmitted, float64(t.Emitted), fn)
		counter(probeDropped, float64(t.Dropped), fn)
		counter(probeUnfinished, float64(t.Unfinished), fn)
		counter(probeSkipped, float64(t.Skipped), fn)
		counter(probeFiltered, float64(t.Filtered), fn)
		counter(probeUntracked, float64(t.Untracked), fn)
		counter(probeReentered, float64(t.Reentered), fn)
		counter(probeContended, float64(t.Contended), fn)
		counter(probeUnstacked, float64(t.Unstacked), fn)
		counter(probeTripped, float64(t.Tripped), fn)
		counter(probeShed, float64(t.Shed), fn)
	}
	counter(exportReceived, float64(st.Received))
	counter(exportRefused, float64(st.Dropped))
	gauge(exportPending, float64(st.Pending))

	gauge(targetAttached, b2f(d.cur != nil))
	gauge(targetPID, float64(pid))
	if d.cur != nil {
		gauge(targetGoid, b2f(d.cur.s.GoidErr == nil))
	}
	counter(reattaches, float64(d.reattaches))

	if d.gov == nil {
		return
	}
	gauge(callCost, d.cost.Seconds())
	gauge(syscallRunCost, d.syscallCost.Seconds())
	dec := d.gov.Decisions()
	counter(decisions, float64(dec.Throttled), "throttle")
	counter(decisions, float64(dec.Readmitted), "readmit")
	counter(decisions, float64(dec.Resampled), "resample")
	counter(decisions, float64(dec.Tripped), "trip")
	gauge(overheadBudget, d.gov.Budget)
	status, estimate := d.gov.Status()
	gauge(overheadEstimate, estimate)
	m := d.gov.Overhead()
	gauge(overheadTarget, m.Target)
	gauge(overheadSelf, m.Self)
	gauge(overheadNode, m.Node)
	counter(overheadTargetS, m.TargetTotal)
	counter(overheadSelfS, m.SelfTotal)
	counter(overheadNodeS, m.NodeTotal)
	gauge(overBudget, b2f(m.Over))
	for _, s := range status {
		for _, state := range []State{Admitted, Throttled} {
			gauge(probeState, b2f(s.State == state), s.Func, state.String())
		}
		gauge(probeAttached, b2f(s.Attached && d.cur != nil), s.Func)
		gauge(probeRate, s.Rate, s.Func)
		gauge(probeDuty, s.Duty, s.Func)
		gauge(probeOverhead, s.Overhead, s.Func)
		gauge(probeSample, float64(s.Sample), s.Func)
	}
}

type exporterTotals struct{ exported, failed, dropped uint64 }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
