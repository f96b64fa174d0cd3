package export

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/ch-go"
	"github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
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
	// Addrs are native-protocol host:port of servers of one ClickHouse;
	// each connection goes to the first that answers. Default
	// 127.0.0.1:9000.
	Addrs []string
	// RandomOrder tries Addrs in an order of this exporter's own, drawn
	// once, instead of as given: a fleet spreads over the servers, and
	// each daemon still fails over through all of them.
	RandomOrder bool
	Username    string // default "default"
	Password    string // see ClickHousePassword
	TLS         *tls.Config

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
//
// The schema is created through clickhouse-go; rows go through a ch-go
// client of their own, as ClickHouseColumns, which cost a fraction of what
// clickhouse-go's row-by-row conversion does.
type ClickHouseExporter struct {
	cfg    ClickHouseConfig
	conn   driver.Conn // DDL
	insert string
	opts   ch.Options // of the INSERT client, but the address
	// addrs are the servers in the order both clients try them.
	addrs []string

	guard                      // serializes Export and guards what follows
	created bool               // the schema exists
	client  *ch.Client         // connected for INSERTs, or nil
	cols    *ClickHouseColumns // reused by every INSERT
}

var _ Exporter = (*ClickHouseExporter)(nil)

// NewClickHouseExporter returns an exporter for cfg. It does not connect.
func NewClickHouseExporter(cfg ClickHouseConfig) (*ClickHouseExporter, error) {
	if err := cfg.Schema.Engine.Validate(); err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	cfg = cfg.withDefaults()
	var (
		method      clickhouse.CompressionMethod
		compression ch.Compression
	)
	switch cfg.Compression {
	case "lz4":
		method, compression = clickhouse.CompressionLZ4, ch.CompressionLZ4
	case "zstd":
		method, compression = clickhouse.CompressionZSTD, ch.CompressionZSTD
	case "none":
		method, compression = clickhouse.CompressionNone, ch.CompressionDisabled
	default:
		return nil, fmt.Errorf("clickhouse compression %q: want lz4, zstd or none", cfg.Compression)
	}
	insert, err := cfg.Schema.InsertStatement()
	if err != nil {
		return nil, err
	}
	addrs := slices.Clone(cfg.Addrs)
	if cfg.RandomOrder {
		rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:             addrs,
		ConnOpenStrategy: clickhouse.ConnOpenInOrder,
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
	return &ClickHouseExporter{
		cfg:    cfg,
		conn:   conn,
		insert: insert + " FORMAT Native",
		addrs:  addrs,
		opts: ch.Options{
			Database:    "default",
			User:        cfg.Username,
			Password:    cfg.Password,
			TLS:         cfg.TLS,
			Compression: compression,
			ClientName:  "cilium-tracer",
			DialTimeout: cfg.DialTimeout,
			ReadTimeout: cfg.ReadTimeout,
			// ch-go's default, 5 minutes, would hold an export on a host
			// that accepts connections and never answers.
			HandshakeTimeout: cfg.ReadTimeout,
		},
		cols: NewClickHouseColumns(),
	}, nil
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

// schemaMissing reports whether err, from either client, says so.
func schemaMissing(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && (ex.Code == chUnknownTable || ex.Code == chUnknownDatabase) ||
		ch.IsErr(err, proto.ErrUnknownTable, proto.ErrUnknownDatabase)
}

// retryable reports whether err may go away by itself. Most errors
// reported by the server (bad schema, permissions) will not.
func retryable(err error) bool {
	var ex *clickhouse.Exception
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.As(err, &ex), ch.IsException(err):
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
	client, err := e.dial(ctx)
	if err != nil {
		return err
	}
	e.cols.Reset()
	for i := range spans {
		e.cols.Append(&spans[i])
		// A call's system calls and child processes are spans of
		// their own, in the rows after it.
		for j := range spans[i].Children {
			e.cols.Append(&spans[i].Children[j])
		}
	}
	// ch-go waits for the server's answer as long as ctx lasts, where a
	// read timeout ends an attempt that a retry may still save.
	qctx, cancel := context.WithTimeout(ctx, e.cfg.ReadTimeout)
	defer cancel()
	if err := client.Do(qctx, ch.Query{Body: e.insert, Input: e.cols.Input()}); err != nil {
		// A failed query may leave a reply unread: start afresh.
		client.Close()
		e.client = nil
		if qctx.Err() != nil && ctx.Err() == nil {
			// Not ctx's error, so that the attempt is retried.
			return fmt.Errorf("insert: no answer within the read timeout, %v", e.cfg.ReadTimeout)
		}
		if schemaMissing(err) && !e.cfg.SkipSchema {
			e.created = false
		}
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}

// dial returns the INSERT client, connecting it to the first address that
// answers if it is not connected.
func (e *ClickHouseExporter) dial(ctx context.Context) (*ch.Client, error) {
	if e.client != nil && !e.client.IsClosed() {
		return e.client, nil
	}
	var errs []error
	for _, addr := range e.addrs {
		opts := e.opts
		opts.Address = addr
		c, err := ch.Dial(ctx, opts)
		if err == nil {
			e.client = c
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return nil, fmt.Errorf("connect: %w", errors.Join(errs...))
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
	return e.shutdown(func() error {
		var err error
		if e.client != nil {
			err = e.client.Close()
		}
		return errors.Join(err, e.conn.Close())
	})
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

// NewClickHouseRow returns the row of s, formatted as the collector formats
// OTLP spans: what ClickHouseColumns.Append writes, column by column.
func NewClickHouseRow(s *Span) ClickHouseRow {
	res := map[string]string{}
	if s.Resource != nil {
		for _, kv := range s.Resource.Attributes() {
			res[string(kv.Key)] = kv.Value.Emit()
		}
	}
	r := ClickHouseRow{
		Timestamp:          s.Start,
		TraceID:            s.TraceID.String(),
		SpanID:             s.SpanID.String(),
		SpanName:           s.Name,
		SpanKind:           spanKindName(s.Kind),
		ResourceAttributes: res,
		ServiceName:        res["service.name"],
		ScopeName:          ScopeName,
		SpanAttributes:     make(map[string]string, len(s.Attributes)),
		Duration:           uint64(max(s.End.Sub(s.Start), 0)),
		StatusCode:         statusCodeName(s),
		StatusMessage:      s.StatusMessage,
	}
	if s.ParentSpanID.IsValid() {
		r.ParentSpanID = s.ParentSpanID.String()
	}
	for _, kv := range s.Attributes {
		r.SpanAttributes[string(kv.Key)] = kv.Value.Emit()
	}
	return r
}

// statusCodeName spells s's status as pdata's StatusCode.String does.
func statusCodeName(s *Span) string {
	if s.StatusCode == 0 {
		return "Unset"
	}
	return s.StatusCode.String()
}

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
