package daemon

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

var churnFor = flag.Duration("churn", 2*time.Minute, "how long TestExpireChurn's target churns goroutines")

// torture.Work of the example agent: it returns, panics or ends its
// goroutine through Goexit.
const tortureWork = "github.com/cilium/cilium/pkg/torture.Work"

// A long-running daemon's goroutine table stays bounded. Round after round
// for -churn (default 2m), the target starts 300 goroutines that each call
// torture.Work once: a third return, a third panic, a third end through
// runtime.Goexit, and goroutines that call nothing traced reuse the dead
// ones' g structures, which clears none of their frames. With expire_after
// 1s, the daemon's sweep reports each call that never returned unfinished
// and empties the table after every round; /metrics shows the fill level
// throughout, never above one round's goroutines. Every call the target
// made is reported once: completed as many as returned, unfinished (and
// expired) as many as never did.
func TestExpireChurn(t *testing.T) {
	const (
		goroutines = 300
		expire     = time.Second
		// Longer than expire, the sweep's interval (expire/10) and the
		// read loop's deadline: a round's frames expire before the next
		// round starts.
		rest = 3 * time.Second
	)
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "0", "-churn", churnFor.String(),
		"-churn-goroutines", strconv.Itoa(goroutines), "-churn-rest", rest.String())
	r := startDaemon(t, fmt.Sprintf(`
probes: [{func: %q}]
expire_after: %v
governor: {hit_cost: 40us, budget_percent: 50}
`, tortureWork, expire), agent.PID)
	if v := r.metric(t, "tracer_goroutine_table_capacity"); v <= goroutines {
		t.Fatalf("tracer_goroutine_table_capacity = %v, want room for more than one round's %d goroutines", v, goroutines)
	}
	agent.Begin(t)

	// The fill level over the run: its peak, and how often it fell back
	// to zero after holding frames.
	var (
		samples, emptied int
		peak             float64
		holding          bool
		rounds           = -1
	)
	deadline := time.Now().Add(*churnFor + 2*time.Minute)
	for rounds < 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the agent still churns %v after it should have stopped", 2*time.Minute)
		}
		v := r.metric(t, "tracer_goroutine_table_entries")
		for _, l := range agent.Lines() {
			fmt.Sscanf(l, "churn rounds=%d", &rounds)
		}
		if v < 0 {
			if rounds >= 0 {
				break // the agent exited and the daemon detached
			}
			t.Fatal("/metrics lacks tracer_goroutine_table_entries while attached")
		}
		samples++
		peak = max(peak, v)
		switch {
		case v > 0:
			holding = true
		case holding:
			holding = false
			emptied++
		}
		time.Sleep(250 * time.Millisecond)
	}
	report := agent.Wait(t, 30*time.Second)
	r.waitDetached(t)
	untracked := r.metric(t, `tracer_probe_untracked_total{function="`+tortureWork+`"}`)
	r.stop(t)

	made, ended := report.Counts[tortureWork], report.Panics[tortureWork]
	t.Logf("%d rounds, %d calls, %d never returned; fill level: %d samples, peak %v, emptied %d times",
		rounds, made, ended, samples, peak, emptied)
	if rounds < 2 || made != uint64(rounds*goroutines) || ended != uint64(rounds*goroutines*2/3) {
		t.Fatalf("the agent ran %d rounds of %d calls, %d never returning: want at least 2 rounds of %d calls, 2/3 never returning",
			rounds, made, ended, goroutines)
	}
	if peak <= 0 || peak > goroutines {
		t.Errorf("goroutine table peaked at %v entries, want some and at most one round's %d goroutines", peak, goroutines)
	}
	if emptied < rounds-1 {
		t.Errorf("goroutine table emptied %d times in %d rounds: the frames of dead goroutines stayed", emptied, rounds)
	}
	if untracked != 0 {
		t.Errorf("%v calls untracked: the goroutine table was full", untracked)
	}

	var done, unfinished, expired uint64
	for _, s := range r.parseSpans(t, agent.PID) {
		switch {
		case s.Function != tortureWork:
		case !s.Unfinished:
			done++
		default:
			unfinished++
			if strings.Contains(s.Reason, "too long") {
				expired++
			}
		}
	}
	if done+unfinished != made || done != made-ended || unfinished != ended {
		t.Errorf("%d completed + %d unfinished spans; the agent made %d calls, %d of which never returned", done, unfinished, made, ended)
	}
	if expired != unfinished {
		t.Errorf("%d of %d unfinished spans expired: the others waited for a reused g or the detach", expired, unfinished)
	}
}
