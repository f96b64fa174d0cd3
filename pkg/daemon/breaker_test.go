package daemon

import (
	"bufio"
	"errors"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// The breaker in BPF, on a function of the test's own process called in a
// tight loop on one thread: it does the work of exactly its allowance of
// hits, no more, then the entries only count, and its record wakes the
// reader at once, without waiting for a batch of records.
func TestBreakerTrips(t *testing.T) {
	const (
		limit = 20
		calls = 5000
	)
	name := runtime.FuncForPC(reflect.ValueOf(calibrationTarget).Pointer()).Name()
	f, err := symbols.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	probes, _, err := session.Resolve(f, []string{name}, probe.Config{BurstLimit: limit})
	if err != nil || len(probes) != 1 {
		t.Fatalf("%d probes: %v", len(probes), err)
	}
	// One thread: its hits all count in one CPU's window.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	set, err := probe.Attach(probes, probe.Options{Binary: "/proc/self/exe", PID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	// A reader waiting before the calls: the records of calls alone do not
	// wake it (they wait for a batch), the trip's does.
	set.SetDeadline(time.Now().Add(time.Minute))
	first := make(chan error, 1)
	var woken time.Time
	go func() {
		var rec probe.Record
		err := set.Read(&rec)
		woken = time.Now()
		first <- err
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	timeRounds(1, calls, callCalibrationTarget)
	cs, err := set.Counters()
	if err != nil {
		t.Fatal(err)
	}
	c := cs[0]
	worked := c.Hits - c.Shed
	t.Logf("%d calls in %v: %d hits, %d traced, %d shed, %d trips, %d records", calls, time.Since(start), c.Hits, worked, c.Shed, c.Tripped, c.Emitted)
	if c.Hits != calls || c.Tripped == 0 {
		t.Fatalf("counters %+v: want %d hits and a trip", c, calls)
	}
	// A preempted thread may move to another CPU, whose window counts
	// from zero.
	if worked < limit || worked > limit*uint64(runtime.NumCPU()) {
		t.Errorf("%d hits traced before the breaker stopped the work, allowance %d per CPU", worked, limit)
	}
	if c.Emitted > worked {
		t.Errorf("%d records of %d traced hits", c.Emitted, worked)
	}

	if err := <-first; err != nil {
		t.Fatalf("the waiting reader: %v, want woken by the trip", err)
	}
	t.Logf("the waiting reader had its first record %v after the calls began", woken.Sub(start))

	// The other calls traced, then the trip, all readable now.
	set.SetDeadline(time.Now().Add(time.Millisecond))
	var rec probe.Record
	returned, tripped := 1, 0 // the first record read was a call
	for {
		err := set.Read(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch rec.Kind {
		case probe.Tripped:
			tripped++
			if rec.Probe != 0 {
				t.Errorf("trip of probe %d, want 0", rec.Probe)
			}
		case probe.Returned:
			returned++
		}
	}
	if tripped == 0 || uint64(returned) != c.Emitted {
		t.Errorf("read %d trips and %d calls, want a trip and %d calls", tripped, returned, c.Emitted)
	}
}

// scrape returns the values of series in one reading of /metrics.
func (r *running) scrape(t *testing.T, series ...string) []float64 {
	t.Helper()
	vals := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(r.get(t, "/metrics")))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatal(err)
		}
		vals[name] = v
	}
	out := make([]float64, len(series))
	for i, s := range series {
		v, ok := vals[s]
		if !ok {
			t.Fatalf("/metrics lacks %s", s)
		}
		out[i] = v
	}
	return out
}

// A hot path in bursts: five tight loops of lookup calls, a second apart.
// In the first burst the probe, admitted until then, takes no more fully
// traced hits than a small multiple of its breaker's allowance for one
// window before the breaker stops its work, and the daemon detaches it at
// once. Counted from the BPF counters: hits, and hits that only counted
// (shed) once the breaker had tripped. The cold probe never trips.
func TestBreakerOnBursts(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-hot", "300000", "-hot-bursts", "5", "-hot-pause", "1s",
		"-hot-background", "-workers", "1", "-interval", "20ms", "-policy-depth", "2")
	r := startDaemon(t, `
probes:
  - func: "`+testagent.RegenerateBPF+`"
  - func: "`+testagent.CTLookup+`"
governor: {hit_cost: 40us}
`, agent.PID)
	limit := float64(burstLimit(DefaultBudgetPercent/100, 40*time.Microsecond))
	agent.Begin(t)

	hot := func(name string) string { return `tracer_` + name + `{function="` + testagent.CTLookup + `"}` }
	_, took := r.waitMetric(t, hot("probe_breaker_trips_total"), time.Minute, func(v float64) bool { return v >= 1 })
	r.waitMetric(t, hot("probe_attached"), 10*time.Second, func(v float64) bool { return v == 0 })
	v := r.scrape(t, hot("probe_hits_total"), hot("probe_shed_total"), hot("probe_breaker_trips_total"))
	hits, shed, trips := v[0], v[1], v[2]
	worked := hits - shed
	t.Logf("first burst: tripped after %v; %.0f hits: %.0f traced, %.0f after the trip until detached (%.0f trips); allowance %.0f per CPU and window",
		took, hits, worked, shed, trips, limit)
	if worked > 2*limit*trips {
		t.Errorf("%.0f hits traced before the breaker stopped the work, allowance %.0f per window: want at most %.0f",
			worked, limit, 2*limit*trips)
	}
	if shed < 1 {
		t.Errorf("no hit shed after the trip")
	}

	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(agent.Output(), "hot calls=") {
		if time.Now().After(deadline) {
			t.Fatal("hot loop did not end")
		}
		time.Sleep(100 * time.Millisecond)
	}
	v = r.scrape(t, hot("probe_hits_total"), hot("probe_shed_total"), hot("probe_breaker_trips_total"),
		`tracer_probe_breaker_trips_total{function="`+testagent.RegenerateBPF+`"}`)
	t.Logf("all bursts: %.0f hits: %.0f traced, %.0f shed, %.0f trips", v[0], v[0]-v[1], v[1], v[2])
	if v[3] != 0 {
		t.Errorf("the cold probe's breaker tripped %v times", v[3])
	}
	report := agent.Stop(t)
	r.waitDetached(t)
	r.stop(t)
	if report.Counts[testagent.CTLookup] != 5*300000 {
		t.Errorf("agent counted %d lookup calls, want %d", report.Counts[testagent.CTLookup], 5*300000)
	}
}
