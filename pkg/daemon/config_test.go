package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/pkg/export"
)

const validConfig = `
target:
  process: cilium-agent
  cilium_version: v1.17.16
probes:
  - func: "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF"
  - func: "github.com/cilium/cilium/pkg/maps/ctmap.(*Map).lookup"
    sample: 100
    min_duration: 1us
    max_events_per_second: 500
  - preset: kvstore
    sample: 10
exporters:
  - json: {}
  - otlp:
      endpoint: 127.0.0.1:4317
      insecure: true
  - clickhouse:
      addrs: ["ch-1:9000", "ch-2:9000"]
      addrs_order: random
      cluster: tracing
      table_engine:
        name: ReplicatedMergeTree
        params: "'/clickhouse/tables/{shard}/otel_traces', '{replica}'"
governor:
  budget_percent: 2
jitter:
  start: 20m
`

func TestParseValid(t *testing.T) {
	cfg, err := Parse("daemon.yaml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Probes[1]
	if p.Sample != 100 || p.MinDuration != time.Microsecond || p.MaxEventsPerSecond != 500 {
		t.Errorf("probe %+v", p)
	}
	if cfg.Probes[0].Sample != 1 {
		t.Errorf("default sample %d, want 1", cfg.Probes[0].Sample)
	}
	if p := cfg.Probes[2]; p.Preset != "kvstore" || p.Func != "" || p.Sample != 10 {
		t.Errorf("preset probe %+v", p)
	}
	g := cfg.Governor
	if g.BudgetPercent != 2 || g.Interval != DefaultInterval || g.Window != DefaultWindow || g.MaxPeriod != DefaultMaxPeriod {
		t.Errorf("governor %+v", g)
	}
	if cfg.Jitter.Start != 20*time.Minute || cfg.Metrics.Listen != DefaultMetricsListen {
		t.Errorf("jitter %+v metrics %+v", cfg.Jitter, cfg.Metrics)
	}
	if cfg.Exporters[1].OTLP == nil || cfg.Exporters[1].OTLP.Endpoint != "127.0.0.1:4317" {
		t.Errorf("exporters %+v", cfg.Exporters)
	}
	if ch := cfg.Exporters[2].ClickHouse; ch == nil || len(ch.Addrs) != 2 || ch.AddrsOrder != "random" || ch.Cluster != "tracing" ||
		ch.TableEngine != (export.TableEngine{Name: "ReplicatedMergeTree", Params: "'/clickhouse/tables/{shard}/otel_traces', '{replica}'"}) {
		t.Errorf("clickhouse exporter %+v", cfg.Exporters[2].ClickHouse)
	}
}

// The example shipped in examples/ is valid.
func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "..", "examples", "daemon.yaml")
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
}

// A bad file is rejected whole, each problem on a line naming the file,
// the line and the key.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // each a line of the error
	}{
		{
			name: "unknown top-level key",
			yaml: "probes: [{func: f}]\nexporters: [{json: {}}]\nsampling: 3\n",
			want: []string{`daemon.yaml:3: sampling: unknown key (want one of target, probes, offsets, stacks, syscalls, syscall_min, exporters, pipeline, governor, jitter, metrics, expire_after)`},
		},
		{
			name: "unknown probe key",
			yaml: "probes:\n  - func: f\n    sample_rate: 3\nexporters: [{json: {}}]\n",
			want: []string{`daemon.yaml:3: probes[0].sample_rate: unknown key (want one of func, preset, sample, min_duration, max_events_per_second, captures, capture_returns, breakdown)`},
		},
		{
			name: "unknown exporter",
			yaml: "probes: [{func: f}]\nexporters:\n  - json: {}\n  - kafka:\n      brokers: [a]\n",
			want: []string{`daemon.yaml:4: exporters[1].kafka: unknown key (want one of terminal, json, clickhouse, otlp)`},
		},
		{
			name: "unknown exporter option",
			yaml: "probes: [{func: f}]\nexporters:\n  - otlp:\n      endpiont: x:4317\n",
			want: []string{`daemon.yaml:4: exporters[0].otlp.endpiont: unknown key (want one of protocol, endpoint, url_path, insecure, headers, timeout)`},
		},
		{
			name: "bad clickhouse cluster options",
			yaml: "probes: [{func: f}]\nexporters:\n  - clickhouse:\n      addrs_order: shuffled\n      table_engine: {name: Log}\n",
			want: []string{
				`daemon.yaml:4: exporters[0].clickhouse.addrs_order: unknown order "shuffled": want in_order or random`,
				`daemon.yaml:5: exporters[0].clickhouse.table_engine: table engine "Log": want a MergeTree-family engine, e.g. ReplicatedMergeTree`,
			},
		},
		{
			name: "bad duration",
			yaml: "probes:\n  - func: f\n    min_duration: 5 parsecs\nexporters: [{json: {}}]\n",
			want: []string{`daemon.yaml:3: probes[0].min_duration: invalid duration "5 parsecs" (want e.g. 250ms, 30s, 20m)`},
		},
		{
			name: "duration without unit",
			yaml: "probes: [{func: f}]\nexporters: [{json: {}}]\njitter:\n  start: 20\n",
			want: []string{`daemon.yaml:4: jitter.start: invalid duration "20" (want e.g. 250ms, 30s, 20m)`},
		},
		{
			name: "negative duration",
			yaml: "probes: [{func: f}]\nexporters: [{json: {}}]\ngovernor:\n  window: -1s\n",
			want: []string{`daemon.yaml:4: governor.window: -1s is negative`},
		},
		{
			name: "bad number",
			yaml: "probes:\n  - func: f\n    sample: -3\nexporters: [{json: {}}]\n",
			want: []string{`daemon.yaml:3: probes[0].sample: invalid value "-3" (want uint32)`},
		},
		{
			name: "several problems at once",
			yaml: "probes:\n  - func: \"\"\nexporters:\n  - otlp: {protocol: carrier-pigeon}\ngovernor:\n  budget_percent: 150\n",
			want: []string{
				`daemon.yaml:2: probes[0].func: a function name or pattern, or a preset, is required`,
				`daemon.yaml:4: exporters[0].otlp.protocol: unknown protocol "carrier-pigeon": want grpc or http`,
				`daemon.yaml:6: governor.budget_percent: 150 not in (0, 100]`,
			},
		},
		{
			name: "unknown preset",
			yaml: "probes:\n  - preset: endpoint\nexporters: [{json: {}}]\n",
			want: []string{`daemon.yaml:2: probes[0].preset: unknown preset "endpoint" (presets: endpoint-regeneration, policy, identity, ipcache, kvstore, datapath)`},
		},
		{
			name: "preset and func",
			yaml: "probes:\n  - preset: policy\n    func: f\nexporters: [{json: {}}]\n",
			want: []string{`daemon.yaml:2: probes[0]: set func or preset, not both`},
		},
		{
			name: "capture_returns not a result",
			yaml: "probes:\n  - func: f\n    capture_returns: [\"rev=e.ID\", \"ret0\"]\nexporters: [{json: {}}]\n",
			want: []string{
				`daemon.yaml:3: probes[0].capture_returns[0]: capture-return "rev=e.ID": want NAME=retN, the N-th result from 0 (or retN:TYPE, result register N, without DWARF)`,
				`daemon.yaml:3: probes[0].capture_returns[1]: capture "ret0": want NAME=EXPR, e.g. endpoint_id=e.ID or endpoint_id=arg0+16:u16`,
			},
		},
		{
			name: "captures on a preset",
			yaml: "probes:\n  - preset: policy\n    captures: [\"id=e.ID\"]\nexporters: [{json: {}}]\n",
			want: []string{`daemon.yaml:3: probes[0].captures: a preset has captures of its own; captures apply to func probes`},
		},
		{
			name: "bad cilium version",
			yaml: "target:\n  cilium_version: \"1.18\"\nprobes: [{preset: policy}]\nexporters: [{json: {}}]\n",
			want: []string{`daemon.yaml:2: target.cilium_version: cilium version "1.18": want a release such as v1.18.5`},
		},
		{
			name: "two exporters in one item",
			yaml: "probes: [{func: f}]\nexporters:\n  - json: {}\n    terminal: {}\n",
			want: []string{`daemon.yaml:3: exporters[0]: one exporter per list item`},
		},
		{
			name: "no probes, no exporters",
			yaml: "target: {pid: 1}\n",
			want: []string{`daemon.yaml: probes: at least one probe is required`, `daemon.yaml: exporters: at least one exporter is required (terminal, json, clickhouse or otlp)`},
		},
		{
			name: "two targets",
			yaml: "target: {pid: 1, process: cilium-agent}\nprobes: [{func: f}]\nexporters: [{json: {}}]\n",
			want: []string{`daemon.yaml:1: target: set only one of pid, container and process`},
		},
		{
			name: "metrics address",
			yaml: "probes: [{func: f}]\nexporters: [{json: {}}]\nmetrics: {listen: 9464}\n",
			want: []string{`daemon.yaml:3: metrics.listen: "9464" is not host:port or none`},
		},
		{
			name: "syntax",
			yaml: "probes: [\n",
			want: []string{`daemon.yaml:1: did not find expected node content`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("daemon.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("%v does not wrap ErrConfig", err)
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", err, strings.Join(tc.want, "\n"))
			}
		})
	}
}

// An exporter that cannot be built (an unreadable password file) stops New:
// nothing starts half-configured.
func TestNewRejectsUnbuildableExporter(t *testing.T) {
	cfg, err := Parse("daemon.yaml", []byte("probes: [{func: f}]\nexporters:\n  - clickhouse: {password_file: /nonexistent/pw}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(cfg, Options{})
	if err == nil || !strings.Contains(err.Error(), "exporters[0].clickhouse: password file") {
		t.Fatalf("New: %v, want the password file named", err)
	}
	dir := t.TempDir()
	cfg.Exporters = []export.ExporterConfig{{JSON: &export.JSONExporterConfig{Path: filepath.Join(dir, "missing", "spans.json")}}}
	if _, err = New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "exporters[0].json") {
		t.Fatalf("New: %v, want the JSON path named", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		t.Error("created a directory")
	}
}
