package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// ExporterConfig is one exporter as a configuration file or command-line
// flags describe it: exactly one of its fields is set. NewExporters turns
// it into exporters; the yaml tags are the keys of the daemon's file.
type ExporterConfig struct {
	Terminal   *TerminalExporterConfig   `yaml:"terminal"`
	JSON       *JSONExporterConfig       `yaml:"json"`
	ClickHouse *ClickHouseExporterConfig `yaml:"clickhouse"`
	OTLP       *OTLPExporterConfig       `yaml:"otlp"`
}

// TerminalExporterConfig prints one line per call (TextExporter).
type TerminalExporterConfig struct {
	Path   string `yaml:"path"` // file to append to; default standard output
	Stacks bool   `yaml:"stacks"`
	// Processes names each call's process (pid=N): for tracing every
	// process that runs an executable.
	Processes bool `yaml:"processes"`
}

// JSONExporterConfig writes one JSON object per call and line
// (JSONExporter).
type JSONExporterConfig struct {
	Path string `yaml:"path"` // file to append to; default standard output
}

// ClickHouseExporterConfig inserts spans into the OpenTelemetry
// Collector's otel_traces table. It names a password file where
// ClickHouseConfig holds the password, so that no password is ever written
// in a configuration file or on a command line.
type ClickHouseExporterConfig struct {
	// Addrs are servers of one ClickHouse, tried in turn until one
	// answers: a connection fails over to the next when one is down.
	Addrs []string `yaml:"addrs"` // default 127.0.0.1:9000
	// AddrsOrder is in_order (default: the first that answers, the others
	// standbys) or random (each daemon its own order, drawn once, so a
	// fleet spreads its inserts over the servers).
	AddrsOrder string `yaml:"addrs_order"`
	// Cluster creates the schema ON CLUSTER, with local tables behind
	// Distributed ones sharded by trace ID (TracesSchema.Cluster).
	Cluster string `yaml:"cluster"`
	// TableEngine is the collector's table_engine; default MergeTree, or
	// with a cluster ReplicatedMergeTree with the {shard} and {replica}
	// macros (DefaultReplicatedParams).
	TableEngine TableEngine `yaml:"table_engine"`

	Database string `yaml:"database"` // default otel
	Table    string `yaml:"table"`    // default otel_traces
	Username string `yaml:"username"` // default "default"
	// PasswordFile holds the password; default $CLICKHOUSE_PASSWORD.
	PasswordFile string        `yaml:"password_file"`
	Compression  string        `yaml:"compression"` // lz4 (default), zstd or none
	TTL          time.Duration `yaml:"ttl"`         // 0 keeps rows forever
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	Retries      int           `yaml:"retries"`
}

// OTLPExporterConfig sends spans to an OTLP receiver.
type OTLPExporterConfig struct {
	Protocol string            `yaml:"protocol"` // grpc (default) or http
	Endpoint string            `yaml:"endpoint"` // host:port; default from OTEL_EXPORTER_OTLP_* or localhost
	URLPath  string            `yaml:"url_path"` // http only; default /v1/traces
	Insecure bool              `yaml:"insecure"`
	Headers  map[string]string `yaml:"headers"`
	Timeout  time.Duration     `yaml:"timeout"`
}

// A ConfigError is a problem with one item of a list of ExporterConfigs.
type ConfigError struct {
	Index int    // the item's position in the list
	Key   string // below the item, e.g. "otlp.protocol"; empty for the item itself
	Err   error
}

// Path is the key at fault as the daemon's file spells it, its list being
// "exporters": "exporters[1].otlp.protocol".
func (e *ConfigError) Path() string {
	p := fmt.Sprintf("exporters[%d]", e.Index)
	if e.Key != "" {
		p += "." + e.Key
	}
	return p
}

func (e *ConfigError) Error() string { return e.Path() + ": " + e.Err.Error() }

func (e *ConfigError) Unwrap() error { return e.Err }

// ValidateExporters checks cfgs without opening anything. It returns every
// problem, joined by errors.Join, each a *ConfigError.
func ValidateExporters(cfgs []ExporterConfig) error {
	var errs []error
	bad := func(i int, key, format string, args ...any) {
		errs = append(errs, &ConfigError{Index: i, Key: key, Err: fmt.Errorf(format, args...)})
	}
	for i, c := range cfgs {
		switch n := c.count(); {
		case n == 0:
			bad(i, "", "empty: want one of terminal, json, clickhouse or otlp")
		case n > 1:
			bad(i, "", "one exporter per list item")
		}
		if ch := c.ClickHouse; ch != nil {
			switch ch.Compression {
			case "", "lz4", "zstd", "none":
			default:
				bad(i, "clickhouse.compression", "unknown compression %q: want lz4, zstd or none", ch.Compression)
			}
			switch ch.AddrsOrder {
			case "", "in_order", "random":
			default:
				bad(i, "clickhouse.addrs_order", "unknown order %q: want in_order or random", ch.AddrsOrder)
			}
			if err := ch.TableEngine.Validate(); err != nil {
				bad(i, "clickhouse.table_engine", "%v", err)
			}
			if ch.TTL < 0 || ch.DialTimeout < 0 {
				bad(i, "clickhouse", "durations must not be negative")
			}
		}
		if o := c.OTLP; o != nil {
			switch o.Protocol {
			case "", "grpc", "http":
			default:
				bad(i, "otlp.protocol", "unknown protocol %q: want grpc or http", o.Protocol)
			}
			if o.Timeout < 0 {
				bad(i, "otlp.timeout", "%v is negative", o.Timeout)
			}
		}
	}
	return errors.Join(errs...)
}

func (c ExporterConfig) count() int {
	n := 0
	for _, set := range []bool{c.Terminal != nil, c.JSON != nil, c.ClickHouse != nil, c.OTLP != nil} {
		if set {
			n++
		}
	}
	return n
}

// NewExporters validates cfgs and makes their exporters, named by kind
// ("otlp", then "otlp-2" for a second one). Terminal and JSON exporters
// without a path write to stdout. Nothing is left open on error.
func NewExporters(ctx context.Context, cfgs []ExporterConfig, stdout io.Writer) (_ map[string]Exporter, err error) {
	if err := ValidateExporters(cfgs); err != nil {
		return nil, err
	}
	out := map[string]Exporter{}
	defer func() {
		if err != nil {
			for _, e := range out {
				e.Shutdown(ctx)
			}
		}
	}()
	seen := map[string]int{}
	for i, c := range cfgs {
		kind, e, err := newExporter(ctx, c, stdout)
		if err != nil {
			return nil, &ConfigError{Index: i, Key: kind, Err: err}
		}
		seen[kind]++
		name := kind
		if seen[kind] > 1 {
			name = fmt.Sprintf("%s-%d", kind, seen[kind])
		}
		out[name] = e
	}
	return out, nil
}

func newExporter(ctx context.Context, c ExporterConfig, stdout io.Writer) (string, Exporter, error) {
	switch {
	case c.Terminal != nil:
		w, closer, err := output(c.Terminal.Path, stdout)
		if err != nil {
			return "terminal", nil, err
		}
		e := NewTextExporter(w, c.Terminal.Stacks)
		e.closer, e.processes = closer, c.Terminal.Processes
		return "terminal", e, nil
	case c.JSON != nil:
		w, closer, err := output(c.JSON.Path, stdout)
		if err != nil {
			return "json", nil, err
		}
		e := NewJSONExporter(w)
		e.closer = closer
		return "json", e, nil
	case c.ClickHouse != nil:
		ch := c.ClickHouse
		pw, err := ClickHousePassword(ch.PasswordFile)
		if err != nil {
			return "clickhouse", nil, err
		}
		e, err := NewClickHouseExporter(ClickHouseConfig{
			Addrs:       ch.Addrs,
			RandomOrder: ch.AddrsOrder == "random",
			Username:    ch.Username,
			Password:    pw,
			Compression: ch.Compression,
			Schema: TracesSchema{Database: ch.Database, Table: ch.Table, TTL: ch.TTL,
				Cluster: ch.Cluster, Engine: ch.TableEngine},
			DialTimeout: ch.DialTimeout,
			Retries:     ch.Retries,
		})
		return "clickhouse", e, err
	default:
		o := c.OTLP
		e, err := NewOTLPExporter(ctx, OTLPConfig{
			HTTP:     o.Protocol == "http",
			Endpoint: o.Endpoint,
			URLPath:  o.URLPath,
			Insecure: o.Insecure,
			Headers:  o.Headers,
			Timeout:  o.Timeout,
		})
		return "otlp", e, err
	}
}

// output opens path to append to. An empty path or "-" is stdout, which
// the caller owns: its closer is nil.
func output(path string, stdout io.Writer) (io.Writer, io.Closer, error) {
	if path == "" || path == "-" {
		return stdout, nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, err
	}
	return f, f, nil
}
