package daemon

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzParse loads configuration files. A rejected file gets one line per
// problem, each naming the file; an accepted one is valid as loaded, and
// written back as YAML it loads to the same configuration. (On the count
// bounding minimization, see pkg/symbols/fuzz_test.go.)
//
//	go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 10m -fuzzminimizetime 1000x ./pkg/daemon
func FuzzParse(f *testing.F) {
	f.Add([]byte(validConfig))
	f.Add([]byte("probes: [{func: f, captures: [id=arg0.ID:u16]}]\nexporters:\n  - clickhouse: {addrs: [a:9000], compression: zstd, ttl: 72h}\n  - terminal: {stacks: true}\ntarget: {pid: 1, restart_backoff: {base: 1s, max: 1m}}\npipeline: {queue_size: 10}\nmetrics: {listen: none}\n"))
	f.Add([]byte("probes:\n  - func: \"\"\nexporters:\n  - otlp: {protocol: carrier-pigeon, headers: {a: b}}\ngovernor:\n  budget_percent: 150\n"))
	f.Add([]byte("probes: [{func: f}]\nexporters: [{json: {}}]\njitter:\n  start: 20\n  sampling: 3\n"))
	f.Add([]byte("probes: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "daemon.yaml"
		cfg, err := Parse(name, data)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("%v does not wrap ErrConfig", err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, name+":") {
					t.Fatalf("error line %q does not name the file; error:\n%v", line, err)
				}
			}
			return
		}
		// NaN passes every comparison: the range checks must not let it in.
		for _, p := range cfg.Probes {
			if math.IsNaN(p.MaxEventsPerSecond) || math.IsInf(p.MaxEventsPerSecond, 0) {
				t.Fatalf("accepted max_events_per_second %v", p.MaxEventsPerSecond)
			}
		}
		if b := cfg.Governor.BudgetPercent; !(b > 0 && b <= 100) {
			t.Fatalf("accepted budget_percent %v", b)
		}
		again := cfg
		if err := again.Validate(); err != nil || !reflect.DeepEqual(again, cfg) {
			t.Fatalf("validating an accepted configuration again: %v, %+v became %+v", err, cfg, again)
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		// Compared as YAML: a nil list and an empty one both write as [].
		back, err := Parse(name, out)
		if err != nil {
			t.Fatalf("accepted, written back as\n%s\nit fails: %v", out, err)
		}
		if out2, err := yaml.Marshal(back); err != nil || !bytes.Equal(out2, out) {
			t.Fatalf("accepted, written back as\n%s\nit loads and writes as\n%s", out, out2)
		}
	})
}
