package daemon

import (
	"bufio"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

// scrape returns the values of series in one reading of /metrics.
func (r *running) scrape(t *testing.T, series ...string) []float64 {
	t.Helper()
	vals := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(r.get(t, "/metrics")))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
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
