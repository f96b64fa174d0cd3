package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cilium-tracer/tracer/pkg/container"
	"github.com/cilium-tracer/tracer/pkg/export"
	"github.com/cilium-tracer/tracer/pkg/presets"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

// Config is the daemon's configuration file. Durations are Go durations
// ("250ms", "20m"); a missing key takes the default named in its comment.
type Config struct {
	Target TargetConfig `yaml:"target"`
	// Probes are the functions to trace.
	Probes []ProbeConfig `yaml:"probes"`
	// Offsets is a file `tracer offsets` wrote from an unstripped build of
	// the target's version: it resolves captures on a stripped binary.
	Offsets string `yaml:"offsets"`
	// Stacks captures the caller stack of every traced call.
	Stacks bool `yaml:"stacks"`
	// Syscalls follows the system calls and child processes of the
	// traced calls, as `tracer trace --syscalls` does: those at least
	// SyscallMin long (default 1ms) become child spans, the shorter ones
	// counts on the call's span. Its programs run at every system call
	// on the node and stop at once outside the target: the budget counts
	// their runs at a cost measured before they load, and reserves it
	// before the probes share what is left. The governor cannot throttle
	// them.
	Syscalls   bool                    `yaml:"syscalls"`
	SyscallMin time.Duration           `yaml:"syscall_min"`
	Exporters  []export.ExporterConfig `yaml:"exporters"`
	Pipeline   PipelineConfig          `yaml:"pipeline"`
	Governor   GovernorConfig          `yaml:"governor"`
	Jitter     JitterConfig            `yaml:"jitter"`
	Metrics    MetricsConfig           `yaml:"metrics"`

	// ExpireAfter is how long a call may go without returning before it
	// is reported unfinished and leaves the goroutine table, so goroutines
	// that ended without a RET (Goexit, a panic) do not fill it; default
	// 10m.
	ExpireAfter time.Duration `yaml:"expire_after"`
}

// TargetConfig selects the process to trace: at most one of PID, Container
// and Process; none finds the node's cilium-agent.
type TargetConfig struct {
	PID       int    `yaml:"pid"`
	Container string `yaml:"container"`
	Process   string `yaml:"process"`
	// CiliumVersion is the target's cilium release (v1.17.16) for binaries
	// that do not say, as builds with -trimpath do: it selects the
	// presets' functions and, on a stripped binary, their offsets.
	CiliumVersion string `yaml:"cilium_version"`
	// Binary, alone or with Container, traces every process that runs
	// this file (a path inside the container's root with Container),
	// those started later included: short-lived programs such as
	// cilium-cni. With PID or Process it overrides the executable symbols
	// are read from and probes attached to (default: the target's,
	// through /proc/PID/root).
	Binary string `yaml:"binary"`
	// RestartBackoff paces the search for the target after it exits:
	// attempt n waits a random time below min(max, base·2ⁿ). Defaults
	// 200ms and 10s.
	RestartBackoff BackoffConfig `yaml:"restart_backoff"`
}

// BackoffConfig is a jittered exponential backoff.
type BackoffConfig struct {
	Base time.Duration `yaml:"base"`
	Max  time.Duration `yaml:"max"`
}

// ProbeConfig is one function pattern, or one preset, and how its calls
// are traced.
type ProbeConfig struct {
	// Func is a function name or glob, as for `tracer trace --func`.
	Func string `yaml:"func"`
	// Preset traces the functions of a preset (`tracer presets`) in the
	// target's cilium release, with the preset's captures, in place of
	// Func.
	Preset string `yaml:"preset"`
	// Sample traces one call in Sample, chosen at random in BPF; default 1.
	// Unsampled calls still cost a trap: sampling cuts export volume, not
	// overhead.
	Sample uint32 `yaml:"sample"`
	// MinDuration drops completed calls shorter than this in BPF.
	MinDuration time.Duration `yaml:"min_duration"`
	// MaxEventsPerSecond caps the spans exported for this probe by raising
	// its sampling while the rate is above it; 0: no cap.
	MaxEventsPerSecond float64 `yaml:"max_events_per_second"`
	// Captures are NAME=EXPR values read at each entry and put on the
	// spans, as for `tracer trace --capture`.
	Captures []string `yaml:"captures"`
	// CaptureReturns are NAME=retN values read at each RET, as for
	// `tracer trace --capture-return`.
	CaptureReturns []string `yaml:"capture_returns"`
	// Breakdown samples each call's goroutine while it runs, for where
	// its time went, as `tracer trace --breakdown` does. The sampling is
	// the daemon's own CPU, which the budget covers.
	Breakdown bool `yaml:"breakdown"`
}

// PipelineConfig bounds the export queues; zero takes export's defaults.
type PipelineConfig struct {
	QueueSize    int           `yaml:"queue_size"`
	BatchSize    int           `yaml:"batch_size"`
	BatchTimeout time.Duration `yaml:"batch_timeout"`
}

// GovernorConfig keeps the cost of the probes under a budget.
type GovernorConfig struct {
	// BudgetPercent is the CPU the tracing may cost, in percent of one
	// CPU: the probes' cost to the target, the daemon's own CPU time and,
	// with syscalls, the syscall programs' cost to the node; default 1.
	BudgetPercent float64 `yaml:"budget_percent"`
	// Interval is how often hit rates are read and decisions made;
	// default 1s.
	Interval time.Duration `yaml:"interval"`
	// Window is how long a throttled probe stays attached in each of its
	// periods, measuring its rate; default 200ms.
	Window time.Duration `yaml:"window"`
	// MaxPeriod bounds a throttled probe's period, so its rate is measured
	// again at least this often; default 1m.
	MaxPeriod time.Duration `yaml:"max_period"`
	// Horizon is how long a measured hit rate counts: probes are admitted
	// on their peak rate over the horizon, because an agent's hot paths
	// come in bursts and a window between two bursts measures nothing;
	// default 5m.
	Horizon time.Duration `yaml:"horizon"`
	// Backoff is how long a throttled probe stays throttled at least;
	// it doubles with each further throttle, up to 64 times; default 1m.
	Backoff time.Duration `yaml:"backoff"`
	// HitCost is the CPU time one traced call costs (entry and RET
	// traps); 0 measures it at start.
	HitCost time.Duration `yaml:"hit_cost"`
}

// JitterConfig spreads the attaches of a fleet of daemons over time.
type JitterConfig struct {
	// Start delays the first attach by a random time in [0, Start).
	Start time.Duration `yaml:"start"`
	// Reattach delays attaching to a restarted target by a random time in
	// [0, Reattach), on top of the restart backoff.
	Reattach time.Duration `yaml:"reattach"`
}

// MetricsConfig serves /metrics and /healthz.
type MetricsConfig struct {
	// Listen is the address to serve on; default DefaultMetricsListen,
	// "none" serves nothing.
	Listen string `yaml:"listen"`
}

// DefaultMetricsListen is local only: the metrics name the traced
// functions.
const DefaultMetricsListen = "127.0.0.1:9464"

// Defaults of the governor.
const (
	DefaultBudgetPercent = 1.0
	DefaultInterval      = time.Second
	DefaultWindow        = 200 * time.Millisecond
	DefaultMaxPeriod     = time.Minute
	DefaultHorizon       = 5 * time.Minute
	DefaultBackoff       = time.Minute
)

// A ConfigError is one problem in a configuration.
type ConfigError struct {
	File string // empty for a configuration built in code
	Line int    // 0 when unknown
	Key  string // path of the key, e.g. "probes[1].min_duration"
	Msg  string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	// yaml's messages quote values, which may span lines; each error is
	// one line of the joined ones.
	b.WriteString(lineBreaks.Replace(e.Msg))
	return b.String()
}

var lineBreaks = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// ErrConfig is wrapped by every error of Load and Validate.
var ErrConfig = errors.New("invalid configuration")

// Is makes errors.Is(err, ErrConfig) true for a *ConfigError.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

// Load reads and validates the configuration file at path.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a configuration; name is the file name used
// in errors. Unknown keys are errors.
func Parse(name string, data []byte) (Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		e := &ConfigError{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
		if m := lineRE.FindStringSubmatch(e.Msg); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = m[2]
		}
		return Config{}, e
	}
	keys := indexKeys(&root)

	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty document decodes to io.EOF: all defaults, which Validate
	// rejects for lack of probes.
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return Config{}, &ConfigError{File: name, Msg: err.Error()}
		}
		errs := make([]error, len(te.Errors))
		for i, msg := range te.Errors {
			errs[i] = keys.explain(name, msg)
		}
		return Config{}, errors.Join(errs...)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, keys.locate(name, err)
	}
	return cfg, nil
}

// Validate checks a configuration and fills in its defaults. Every problem
// is a *ConfigError; all are reported at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}

	t := &c.Target
	n := 0
	for _, set := range []bool{t.PID != 0, t.Container != "", t.Process != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		bad("target", "set only one of pid, container and process")
	}
	if t.PID < 0 {
		bad("target.pid", "%d is not a PID", t.PID)
	}
	if t.CiliumVersion != "" {
		if _, err := presets.ParseRelease(t.CiliumVersion); err != nil {
			bad("target.cilium_version", "%v", err)
		}
	}
	if t.RestartBackoff.Base < 0 || t.RestartBackoff.Max < 0 {
		bad("target.restart_backoff", "durations must not be negative")
	}

	if len(c.Probes) == 0 {
		bad("probes", "at least one probe is required")
	}
	for i := range c.Probes {
		p := &c.Probes[i]
		key := fmt.Sprintf("probes[%d]", i)
		switch {
		case p.Preset != "" && p.Func != "":
			bad(key, "set func or preset, not both")
		case p.Preset != "":
			if _, err := presets.Lookup(p.Preset); err != nil {
				bad(key+".preset", "%v", err)
			}
			if len(p.Captures) > 0 || len(p.CaptureReturns) > 0 {
				bad(key+".captures", "a preset has captures of its own; captures apply to func probes")
			}
		case strings.TrimSpace(p.Func) == "":
			bad(key+".func", "a function name or pattern, or a preset, is required")
		}
		if p.Sample == 0 {
			p.Sample = 1
		}
		if p.MinDuration < 0 {
			bad(key+".min_duration", "%v is negative", p.MinDuration)
		}
		switch m := p.MaxEventsPerSecond; {
		case m < 0:
			bad(key+".max_events_per_second", "%v is negative", m)
		case math.IsNaN(m) || math.IsInf(m, 0):
			bad(key+".max_events_per_second", "%v is not a number of events", m)
		}
		for j, c := range p.Captures {
			if _, _, err := args.ParseCaptureFlag(c); err != nil {
				bad(fmt.Sprintf("%s.captures[%d]", key, j), "%v", err)
			}
		}
		for j, c := range p.CaptureReturns {
			if err := args.ParseReturnFlag(c); err != nil {
				bad(fmt.Sprintf("%s.capture_returns[%d]", key, j), "%v", err)
			}
		}
	}

	if len(c.Exporters) == 0 {
		bad("exporters", "at least one exporter is required (terminal, json, clickhouse or otlp)")
	}
	if err := export.ValidateExporters(c.Exporters); err != nil {
		// Joined *export.ConfigErrors, renamed so that locate finds
		// their lines.
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			ce := e.(*export.ConfigError)
			bad(ce.Path(), "%v", ce.Err)
		}
	}

	if c.SyscallMin < 0 {
		bad("syscall_min", "%v is negative", c.SyscallMin)
	}
	if c.ExpireAfter < 0 {
		bad("expire_after", "%v is negative", c.ExpireAfter)
	}

	if c.Pipeline.QueueSize < 0 || c.Pipeline.BatchSize < 0 || c.Pipeline.BatchTimeout < 0 {
		bad("pipeline", "sizes and durations must not be negative")
	}

	g := &c.Governor
	if g.BudgetPercent == 0 {
		g.BudgetPercent = DefaultBudgetPercent
	}
	// Written so that NaN, which fails every comparison, is refused.
	if !(g.BudgetPercent > 0 && g.BudgetPercent <= 100) {
		bad("governor.budget_percent", "%v not in (0, 100]", g.BudgetPercent)
	}
	for _, d := range []struct {
		key string
		v   *time.Duration
		def time.Duration
	}{
		{"governor.interval", &g.Interval, DefaultInterval},
		{"governor.window", &g.Window, DefaultWindow},
		{"governor.max_period", &g.MaxPeriod, DefaultMaxPeriod},
		{"governor.horizon", &g.Horizon, DefaultHorizon},
		{"governor.backoff", &g.Backoff, DefaultBackoff},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 0 {
			bad(d.key, "%v is negative", *d.v)
		}
	}
	if g.HitCost < 0 {
		bad("governor.hit_cost", "%v is negative", g.HitCost)
	}
	if g.Window > 0 && g.MaxPeriod > 0 && g.MaxPeriod < 2*g.Window {
		bad("governor.max_period", "%v is less than twice governor.window (%v)", g.MaxPeriod, g.Window)
	}

	if c.Jitter.Start < 0 {
		bad("jitter.start", "%v is negative", c.Jitter.Start)
	}
	if c.Jitter.Reattach < 0 {
		bad("jitter.reattach", "%v is negative", c.Jitter.Reattach)
	}

	if c.Metrics.Listen == "" {
		c.Metrics.Listen = DefaultMetricsListen
	}
	if c.Metrics.Listen != "none" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%q is not host:port or none", c.Metrics.Listen)
		}
	}
	return errors.Join(errs...)
}

// everyProcess says the daemon traces every process that runs Binary.
func (t TargetConfig) everyProcess() bool {
	return t.Binary != "" && t.PID == 0 && t.Process == ""
}

// selector is the target as pkg/container takes it.
func (t TargetConfig) selector() container.Selector {
	return container.Selector{PID: t.PID, Container: t.Container, Process: t.Process}
}

func (t TargetConfig) backoff() container.Backoff {
	return container.Backoff{Base: t.RestartBackoff.Base, Max: t.RestartBackoff.Max}
}

// A keyIndex maps the keys of a YAML document to their lines, so that
// decoding and validation errors can name both.
type keyIndex []keyPos

type keyPos struct {
	path  string // e.g. "exporters[0].otlp.endpoint"
	key   string // last element, e.g. "endpoint"
	value string // scalar value, if any
	line  int
}

func indexKeys(root *yaml.Node) keyIndex {
	var idx keyIndex
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				kp := keyPos{path: p, key: k.Value, line: k.Line}
				if v.Kind == yaml.ScalarNode {
					kp.value = v.Value
				}
				idx = append(idx, kp)
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				idx = append(idx, keyPos{path: p, line: c.Line})
				walk(c, p)
			}
		}
	}
	walk(root, "")
	return idx
}

// A value in yaml's messages may span lines: (?s) lets the patterns match
// it, and the messages built from them quote it.
var (
	lineRE    = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
	unknownRE = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	typeRE    = regexp.MustCompile("(?s)^cannot unmarshal \\S+ `(.*)` into (\\S+)$")
)

// explain rewrites one of yaml's decoding errors to name the key.
func (idx keyIndex) explain(file, msg string) error {
	e := &ConfigError{File: file, Msg: msg}
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return e
	}
	e.Line, _ = strconv.Atoi(m[1])
	e.Msg = m[2]
	if u := unknownRE.FindStringSubmatch(m[2]); u != nil {
		for _, k := range idx {
			if k.line == e.Line && k.key == u[1] {
				e.Key = k.path
				break
			}
		}
		e.Msg = "unknown key"
		if known := knownKeys(e.Key); len(known) > 0 {
			e.Msg += " (want one of " + strings.Join(known, ", ") + ")"
		}
		if e.Key == "" {
			e.Msg = fmt.Sprintf("unknown key %q", u[1])
		}
		return e
	}
	if t := typeRE.FindStringSubmatch(m[2]); t != nil {
		for _, k := range idx {
			if k.line == e.Line && k.value == t[1] {
				e.Key = k.path
				break
			}
		}
		switch t[2] {
		case "time.Duration":
			e.Msg = fmt.Sprintf("invalid duration %q (want e.g. 250ms, 30s, 20m)", t[1])
		default:
			e.Msg = fmt.Sprintf("invalid value %q (want %s)", t[1], strings.TrimPrefix(t[2], "daemon."))
		}
	}
	return e
}

// locate adds file and line to the *ConfigErrors of Validate.
func (idx keyIndex) locate(file string, err error) error {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var ce *ConfigError
		if !errors.As(e, &ce) {
			continue
		}
		ce.File = file
		for _, k := range idx {
			if k.path == ce.Key {
				ce.Line = k.line
				break
			}
		}
	}
	return errors.Join(errs...)
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

// knownKeys lists the keys allowed beside the one at path.
func knownKeys(path string) []string {
	if path == "" {
		return nil
	}
	parts := strings.Split(indexRE.ReplaceAllString(path, ""), ".")
	t := reflect.TypeOf(Config{})
	for _, p := range parts[:len(parts)-1] {
		f, ok := fieldByTag(t, p)
		if !ok {
			return nil
		}
		t = f.Type
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for i := range t.NumField() {
		if tag := yamlName(t.Field(i)); tag != "" {
			keys = append(keys, tag)
		}
	}
	return keys
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for i := range t.NumField() {
		if yamlName(t.Field(i)) == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}
