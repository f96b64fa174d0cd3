package export

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
)

// PasswordEnv is the environment variable ClickHousePassword reads.
const PasswordEnv = "CLICKHOUSE_PASSWORD"

// ClickHousePassword returns the password in file, without a trailing
// newline, or, when file is empty, the value of $CLICKHOUSE_PASSWORD.
// Passwords never come from command-line values, which any user can read
// in /proc.
func ClickHousePassword(file string) (string, error) {
	if file == "" {
		return os.Getenv(PasswordEnv), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// ClickHouseConfig configures a ClickHouseExporter. Zero fields take the
// defaults. Batching is the pipeline's: each Export is one INSERT.
type ClickHouseConfig struct {
	Addrs    []string // native-protocol host:port; default 127.0.0.1:9000
	Username string   // default "default"
	Password string   // see ClickHousePassword
	TLS      *tls.Config

	// Compression of data blocks: "lz4" (default), "zstd" or "none".
	Compression string

	Schema TracesSchema
	// SkipSchema leaves the database and tables alone, for users allowed
	// to insert but not to create; they must exist already.
	SkipSchema bool

	DialTimeout time.Duration // default 5s
	ReadTimeout time.Duration // default 30s

	// Retries is how many times a failed INSERT is retried before the batch
	// is given up; negative means never retry. Default 5.
	Retries int
	// Backoff before retry n is uniformly random in
	// [0, min(MaxBackoff, MinBackoff·2ⁿ)) ("full jitter"), so that thousands
	// of nodes coming back together do not retry in lockstep. Defaults 200ms
	// and 30s.
	MinBackoff, MaxBackoff time.Duration
}

func (c ClickHouseConfig) withDefaults() ClickHouseConfig {
	if len(c.Addrs) == 0 {
		c.Addrs = []string{"127.0.0.1:9000"}
	}
	if c.Username == "" {
		c.Username = "default"
	}
	if c.Compression == "" {
		c.Compression = "lz4"
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.Retries == 0 {
		c.Retries = 5
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	c.Schema = c.Schema.withDefaults()
	return c
}

// ClickHouseExporter inserts spans into the OpenTelemetry Collector's
// otel_traces table over ClickHouse's native protocol. Unless told not to,
// it creates the database and tables on its first successful connection,
// not when it is created: an unreachable ClickHouse must never stop the
// tracer from starting.
type ClickHouseExporter struct {
	cfg    ClickHouseConfig
	conn   driver.Conn
	insert string

	guard        // serializes Export and guards created
	created bool // the schema exists
}

var _ Exporter = (*ClickHouseExporter)(nil)

// NewClickHouseExporter returns an exporter for cfg. It does not connect.
func NewClickHouseExporter(cfg ClickHouseConfig) (*ClickHouseExporter, error) {
	cfg = cfg.withDefaults()
	var method clickhouse.CompressionMethod
	switch cfg.Compression {
	case "lz4":
		method = clickhouse.CompressionLZ4
	case "zstd":
		method = clickhouse.CompressionZSTD
	case "none":
		method = clickhouse.CompressionNone
	default:
		return nil, fmt.Errorf("clickhouse compression %q: want lz4, zstd or none", cfg.Compression)
	}
	insert, err := cfg.Schema.InsertStatement()
	if err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: cfg.Addrs,
		// The configured database may not exist yet; statements name it.
		Auth:         clickhouse.Auth{Database: "default", Username: cfg.Username, Password: cfg.Password},
		TLS:          cfg.TLS,
		Compression:  &clickhouse.Compression{Method: method},
		DialTimeout:  cfg.DialTimeout,
		ReadTimeout:  cfg.ReadTimeout,
		MaxOpenConns: 2,
		MaxIdleConns: 1,
		ClientInfo: clickhouse.ClientInfo{Products: []struct{ Name, Version string }{
			{Name: "cilium-tracer"},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	return &ClickHouseExporter{cfg: cfg, conn: conn, insert: insert}, nil
}

// Export inserts spans as one batch, retrying with jittered exponential
// backoff until it succeeds, the retries run out, or ctx ends.
func (e *ClickHouseExporter) Export(ctx context.Context, spans []Span) error {
	return e.export(func() error { return e.insertRetrying(ctx, spans) })
}

func (e *ClickHouseExporter) insertRetrying(ctx context.Context, spans []Span) error {
	if len(spans) == 0 {
		return nil
	}
	for attempt := 0; ; attempt++ {
		err := e.exportOnce(ctx, spans)
		if err == nil {
			return nil
		}
		if attempt >= e.cfg.Retries || !retryable(err) || ctx.Err() != nil {
			return fmt.Errorf("clickhouse: %d spans after %d attempts: %w", len(spans), attempt+1, err)
		}
		t := time.NewTimer(backoff(e.cfg.MinBackoff, e.cfg.MaxBackoff, attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("clickhouse: %d spans: %w (last error: %w)", len(spans), ctx.Err(), err)
		}
	}
}

// ClickHouse error codes the exporter recovers from by creating the
// schema again (someone dropped it, or the server lost its data).
const (
	chUnknownTable    = 60
	chUnknownDatabase = 81
)

func schemaMissing(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && (ex.Code == chUnknownTable || ex.Code == chUnknownDatabase)
}

// errPermanent marks errors that retrying cannot fix.
var errPermanent = errors.New("not retried")

// retryable reports whether err may go away by itself. Most errors
// reported by the server (bad schema, permissions) will not.
func retryable(err error) bool {
	var ex *clickhouse.Exception
	switch {
	case errors.Is(err, errPermanent), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.As(err, &ex):
		return schemaMissing(err)
	}
	return true
}

func backoff(lo, hi time.Duration, attempt int) time.Duration {
	d := hi
	if attempt < 30 && lo<<attempt < hi {
		d = lo << attempt
	}
	return rand.N(d) + time.Millisecond
}

func (e *ClickHouseExporter) exportOnce(ctx context.Context, spans []Span) error {
	if !e.created && !e.cfg.SkipSchema {
		if err := e.createSchema(ctx); err != nil {
			return err
		}
		e.created = true
	}
	batch, err := e.conn.PrepareBatch(ctx, e.insert)
	if err != nil {
		if schemaMissing(err) && !e.cfg.SkipSchema {
			e.created = false
		}
		return fmt.Errorf("prepare insert: %w", err)
	}
	// Abort is a no-op after a successful Send, and releases the
	// connection after a failed Append.
	defer batch.Abort()
	appendColumn := func(i int, col any) error { return batch.Column(i).Append(col) }
	if err := AppendClickHouseColumns(spans, appendColumn); err != nil {
		return fmt.Errorf("append %d spans: %w: %w", len(spans), errPermanent, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}

func (e *ClickHouseExporter) createSchema(ctx context.Context) error {
	schema := e.cfg.Schema
	v, err := e.conn.ServerVersion()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	schema.FullTextSearch = v.Version.Major > 26 || v.Version.Major == 26 && v.Version.Minor >= 2
	stmts, err := schema.Statements()
	if err != nil {
		return err
	}
	for _, stmt := range stmts {
		if err := e.conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
	}
	return nil
}

// Shutdown implements Exporter: it closes the connections.
func (e *ClickHouseExporter) Shutdown(context.Context) error {
	return e.shutdown(e.conn.Close)
}

// ClickHouseRow is one otel_traces row as ClickHouseExporter writes it;
// Events and Links are always empty.
type ClickHouseRow struct {
	Timestamp          time.Time
	TraceID            string // hex, as the collector writes it
	SpanID             string
	ParentSpanID       string // empty for root spans
	TraceState         string
	SpanName           string
	SpanKind           string // "Internal"
	ServiceName        string
	ResourceAttributes map[string]string
	ScopeName          string
	ScopeVersion       string
	SpanAttributes     map[string]string
	Duration           uint64 // nanoseconds
	StatusCode         string // "Unset" or "Error"
	StatusMessage      string
}

// AppendClickHouseColumns renders spans, each followed by its children, as
// the columns of TracesSchema.InsertStatement and hands each, in order, to
// appendColumn (a batch's Column(i).Append, or a block's). Filling a column
// at a time takes one typed slice per column instead of a reflective
// conversion per value, and the spans of one builder share one resource
// map.
func AppendClickHouseColumns(spans []Span, appendColumn func(i int, column any) error) error {
	spans = withChildren(spans)
	n := len(spans)
	var (
		ts                         = make([]time.Time, n)
		traceID, spanID, parentID  = make([]string, n), make([]string, n), make([]string, n)
		empty                      = make([]string, n)
		name, kind, service, scope = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		resAttrs, spanAttrs        = make([]kvList, n), make([]kvList, n)
		duration                   = make([]uint64, n)
		statusCode, statusMessage  = make([]string, n), make([]string, n)
		noTimes                    = make([][]time.Time, n)
		noStrings                  = make([][]string, n)
		noMaps                     = make([][]map[string]string, n)
		lastRes                    *resource.Resource
		lastResMap                 map[string]string
		lastResList                kvList
	)
	for i := range spans {
		sp := &spans[i]
		if sp.Resource != lastRes || lastResMap == nil {
			lastRes, lastResMap = sp.Resource, resourceMap(sp.Resource)
			if sp.Resource != nil {
				lastResList = sp.Resource.Attributes()
			}
		}
		r := newClickHouseRow(sp, lastResMap, false)
		ts[i], traceID[i], spanID[i], parentID[i] = r.Timestamp, r.TraceID, r.SpanID, r.ParentSpanID
		name[i], kind[i], service[i], scope[i] = r.SpanName, r.SpanKind, r.ServiceName, r.ScopeName
		resAttrs[i], spanAttrs[i], duration[i] = lastResList, sp.Attributes, r.Duration
		statusCode[i], statusMessage[i] = r.StatusCode, r.StatusMessage
	}
	// In the order of InsertStatement's columns.
	for i, col := range []any{
		ts, traceID, spanID, parentID, empty, name, kind, service, resAttrs,
		scope, empty, spanAttrs, duration, statusCode, statusMessage,
		noTimes, noStrings, noMaps, noStrings, noStrings, noStrings, noMaps,
	} {
		if err := appendColumn(i, col); err != nil {
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	return nil
}

func resourceMap(res *resource.Resource) map[string]string {
	m := map[string]string{}
	if res != nil {
		for _, kv := range res.Attributes() {
			m[string(kv.Key)] = kv.Value.Emit()
		}
	}
	return m
}

// NewClickHouseRow returns the row of s, formatted as the collector formats
// OTLP spans.
func NewClickHouseRow(s *Span) ClickHouseRow {
	return newClickHouseRow(s, resourceMap(s.Resource), true)
}

// newClickHouseRow fills r.SpanAttributes only with spanAttrs: the column
// path hands the attributes over as a kvList.
func newClickHouseRow(s *Span, res map[string]string, spanAttrs bool) ClickHouseRow {
	r := ClickHouseRow{
		Timestamp:          s.Start,
		TraceID:            s.TraceID.String(),
		SpanID:             s.SpanID.String(),
		SpanName:           s.Name,
		SpanKind:           spanKindName(s.Kind),
		ResourceAttributes: res,
		ServiceName:        res["service.name"],
		ScopeName:          ScopeName,
		Duration:           uint64(max(s.End.Sub(s.Start), 0)),
		StatusCode:         "Unset",
		StatusMessage:      s.StatusMessage,
	}
	if s.ParentSpanID.IsValid() {
		r.ParentSpanID = s.ParentSpanID.String()
	}
	if s.StatusCode != 0 {
		r.StatusCode = s.StatusCode.String()
	}
	if spanAttrs {
		r.SpanAttributes = make(map[string]string, len(s.Attributes))
		for _, kv := range s.Attributes {
			r.SpanAttributes[string(kv.Key)] = kv.Value.Emit()
		}
	}
	return r
}

// kvList feeds attributes to a Map(LowCardinality(String), String) column
// through clickhouse-go's IterableOrderedMap, which it reads without the
// reflection (and the map) a map[string]string costs per row.
type kvList []attribute.KeyValue

// Put is part of IterableOrderedMap; columns only read.
func (l kvList) Put(any, any) {}

func (l kvList) Iterator() column.MapIterator { return &kvIter{l: l, i: -1} }

type kvIter struct {
	l kvList
	i int
}

func (it *kvIter) Next() bool { it.i++; return it.i < len(it.l) }
func (it *kvIter) Key() any   { return string(it.l[it.i].Key) }
func (it *kvIter) Value() any { return it.l[it.i].Value.Emit() }

// spanKindName spells kinds as pdata's SpanKind.String does, which is what
// the collector stores.
func spanKindName(k trace.SpanKind) string {
	switch k {
	case trace.SpanKindInternal:
		return "Internal"
	case trace.SpanKindServer:
		return "Server"
	case trace.SpanKindClient:
		return "Client"
	case trace.SpanKindProducer:
		return "Producer"
	case trace.SpanKindConsumer:
		return "Consumer"
	}
	return "Unspecified"
}
