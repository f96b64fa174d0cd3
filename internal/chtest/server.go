package chtest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/ch-go/compress"
	"github.com/ClickHouse/ch-go/proto"
)

// Server is a ClickHouse server that accepts INSERTs into otel_traces and
// keeps the decoded rows in memory.
type Server struct {
	t     testing.TB
	addr  string
	major int
	minor int
	tls   *tls.Config

	mu        sync.Mutex
	ln        net.Listener
	conns     map[net.Conn]struct{}
	blackhole bool // accept connections and never answer
	noTable   bool // INSERTs fail with UNKNOWN_TABLE until the next CREATE TABLE
	queries   []string
	rows      []Row
	count     int  // rows inserted
	countOnly bool // keep count, not rows
	hellos    []proto.ClientHello
	connects  []time.Time // when each hello arrived
	received  int64       // bytes read from clients
	compress  []proto.Compression
	wg        sync.WaitGroup
}

// Row is one decoded otel_traces row, with the fields of the collector's
// columns.
type Row struct {
	Timestamp          time.Time
	TraceID            string // hex
	SpanID             string
	ParentSpanID       string // empty for root spans
	TraceState         string
	SpanName           string
	SpanKind           string
	ServiceName        string
	ResourceAttributes map[string]string
	ScopeName          string
	ScopeVersion       string
	SpanAttributes     map[string]string
	Duration           uint64 // nanoseconds
	StatusCode         string
	StatusMessage      string
	Events, Links      int // lengths of the Nested arrays
}

const chRevision = 54460 // what clickhouse-go v2.51 speaks

// New starts a server on a free loopback port announcing itself as
// ClickHouse major.minor; tb's cleanup closes it.
func New(tb testing.TB, major, minor int) *Server {
	return NewTLS(tb, major, minor, nil)
}

// NewTLS is New speaking TLS with cfg (plain TCP if nil).
func NewTLS(tb testing.TB, major, minor int, cfg *tls.Config) *Server {
	s := &Server{t: tb, major: major, minor: minor, tls: cfg, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	tb.Cleanup(s.Close)
	return s
}

// Listen starts a server for a program rather than a test (the
// benchmarks): it keeps the count of rows inserted, not the rows, and drops
// connection errors. Close stops it.
func Listen(major, minor int) (*Server, error) {
	s := &Server{major: major, minor: minor, conns: map[net.Conn]struct{}{}, countOnly: true}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	return s, nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

func (s *Server) serve(ln net.Listener) {
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			hole := s.blackhole
			s.mu.Unlock()
			if hole {
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				err := s.handle(c)
				if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && s.t != nil {
					s.t.Logf("chtest: %v", err)
				}
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
		}
	}()
}

// Stop closes the listener and every connection: clients get "connection
// refused" until Start.
func (s *Server) Stop() {
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
}

// Start listens again on the same address.
func (s *Server) Start() {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("relisten on %s: %v", s.addr, err)
	}
	s.serve(ln)
}

// SetBlackhole makes the server accept connections and never answer, as a
// host behind a dropping firewall does, or serve normally again.
func (s *Server) SetBlackhole(on bool) {
	s.mu.Lock()
	s.blackhole = on
	// Turning on, clients must reconnect into the hole; turning off,
	// connections accepted while blackholed would never get an answer.
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
}

// DropTable makes INSERTs fail with UNKNOWN_TABLE, as after a DROP TABLE,
// until the next CREATE TABLE.
func (s *Server) DropTable() {
	s.mu.Lock()
	s.noTable = true
	s.mu.Unlock()
}

// Close stops the server and waits for its goroutines.
func (s *Server) Close() {
	s.Stop()
	s.wg.Wait()
}

// Snapshot returns every query received and every row inserted so far, in
// order.
func (s *Server) Snapshot() (queries []string, rows []Row) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...), append([]Row(nil), s.rows...)
}

// RowCount is the number of rows inserted so far.
func (s *Server) RowCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Hellos returns the hello of every connection so far: client name,
// user, password and database.
func (s *Server) Hellos() []proto.ClientHello {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]proto.ClientHello(nil), s.hellos...)
}

// Connects returns when each connection's hello arrived, in order: when
// clients connected.
func (s *Server) Connects() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.connects...)
}

// Received is how many bytes clients have sent so far, as they crossed the
// wire: compressed blocks, queries and protocol framing.
func (s *Server) Received() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received
}

// countingReader adds what it reads to its server's Received.
type countingReader struct {
	r io.Reader
	s *Server
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.s.mu.Lock()
	c.s.received += int64(n)
	c.s.mu.Unlock()
	return n, err
}

// Compressions returns, per query in Snapshot's order, whether the client
// asked for compressed data.
func (s *Server) Compressions() []proto.Compression {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]proto.Compression(nil), s.compress...)
}

type conn struct {
	s    *Server
	c    net.Conn
	r    *proto.Reader
	buf  proto.Buffer
	ver  int
	cols *otelColumns // reused by every INSERT, so that decoding allocates little
}

func (s *Server) handle(c net.Conn) error {
	cc := &conn{s: s, c: c, r: proto.NewReader(countingReader{c, s})}
	code, err := cc.r.UVarInt()
	if err != nil {
		return fmt.Errorf("hello code: %w", err)
	}
	if proto.ClientCode(code) != proto.ClientCodeHello {
		return fmt.Errorf("first packet %d is not a hello", code)
	}
	var hello proto.ClientHello
	if err := hello.Decode(cc.r); err != nil {
		return fmt.Errorf("decode hello: %w", err)
	}
	s.mu.Lock()
	s.hellos = append(s.hellos, hello)
	s.connects = append(s.connects, time.Now())
	s.mu.Unlock()
	cc.ver = min(hello.ProtocolVersion, chRevision)
	sh := proto.ServerHello{
		Name: "ClickHouse", Major: s.major, Minor: s.minor, Revision: chRevision,
		Timezone: "UTC", DisplayName: "chtest", Patch: 1,
	}
	sh.EncodeAware(&cc.buf, cc.ver)
	if err := cc.flush(); err != nil {
		return err
	}
	if proto.FeatureAddendum.In(cc.ver) {
		if _, err := cc.r.Str(); err != nil { // quota key
			return fmt.Errorf("addendum: %w", err)
		}
	}
	for {
		code, err := cc.r.UVarInt()
		if err != nil {
			return err
		}
		switch proto.ClientCode(code) {
		case proto.ClientCodePing:
			proto.ServerCodePong.Encode(&cc.buf)
			if err := cc.flush(); err != nil {
				return err
			}
		case proto.ClientCodeQuery:
			if err := cc.query(); err != nil {
				return err
			}
		case proto.ClientCodeCancel:
		default:
			return fmt.Errorf("unexpected packet %d", code)
		}
	}
}

func (cc *conn) flush() error {
	_, err := cc.c.Write(cc.buf.Buf)
	cc.buf.Reset()
	return err
}

func (cc *conn) query() error {
	var q proto.Query
	if err := q.DecodeAware(cc.r, cc.ver); err != nil {
		return fmt.Errorf("decode query: %w", err)
	}
	cc.s.mu.Lock()
	cc.s.queries = append(cc.s.queries, q.Body)
	cc.s.compress = append(cc.s.compress, q.Compression)
	cc.s.mu.Unlock()
	compressed := q.Compression == proto.CompressionEnabled

	// The query is followed by a block of external data ending with an
	// empty one.
	if _, err := cc.readBlock(compressed, nil); err != nil {
		return fmt.Errorf("external data: %w", err)
	}

	cc.s.mu.Lock()
	if strings.HasPrefix(q.Body, "CREATE TABLE") {
		cc.s.noTable = false
	}
	noTable := cc.s.noTable
	cc.s.mu.Unlock()
	if noTable && strings.HasPrefix(q.Body, "INSERT INTO") {
		proto.ServerCodeException.Encode(&cc.buf)
		ex := proto.Exception{Code: 60, Name: "DB::Exception", Message: "Table otel.otel_traces does not exist. (UNKNOWN_TABLE)"}
		ex.EncodeAware(&cc.buf, cc.ver)
		return cc.flush()
	}
	if strings.HasPrefix(q.Body, "INSERT INTO") {
		if err := cc.insert(compressed); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
	}
	proto.ServerCodeProgress.Encode(&cc.buf)
	proto.Progress{ElapsedNs: 1000}.EncodeAware(&cc.buf, cc.ver)
	proto.ServerCodeEndOfStream.Encode(&cc.buf)
	return cc.flush()
}

// readBlock reads one Data packet into target and reports whether it was
// the empty end-of-data block.
func (cc *conn) readBlock(compressed bool, target proto.Result) (proto.Block, error) {
	var b proto.Block
	code, err := cc.r.UVarInt()
	if err != nil {
		return b, err
	}
	if proto.ClientCode(code) != proto.ClientCodeData {
		return b, fmt.Errorf("packet %d, want data", code)
	}
	var data proto.ClientData
	if err := data.DecodeAware(cc.r, cc.ver); err != nil {
		return b, err
	}
	if compressed {
		cc.r.EnableCompression()
		defer cc.r.DisableCompression()
	}
	if err := b.DecodeBlock(cc.r, cc.ver, target); err != nil {
		return b, err
	}
	return b, nil
}

// otelColumns are the insertable columns of otel_traces as the server
// describes them to a client, in table order.
type otelColumns struct {
	ts                                 *proto.ColDateTime64
	traceID, spanID, parentID, state   *proto.ColStr
	name, kind, service                *proto.ColLowCardinality[string]
	resAttrs                           *proto.ColMap[string, string]
	scopeName, scopeVersion            *proto.ColStr
	spanAttrs                          *proto.ColMap[string, string]
	duration                           *proto.ColUInt64
	statusCode                         *proto.ColLowCardinality[string]
	statusMessage                      *proto.ColStr
	evTS                               *proto.ColArr[time.Time]
	evName                             *proto.ColArr[string]
	evAttrs                            *proto.ColArr[map[string]string]
	linkTraceID, linkSpanID, linkState *proto.ColArr[string]
	linkAttrs                          *proto.ColArr[map[string]string]
}

func strMap() *proto.ColMap[string, string] {
	return proto.NewMap[string, string](new(proto.ColStr).LowCardinality(), new(proto.ColStr))
}

func newOtelColumns() *otelColumns {
	return &otelColumns{
		ts:            new(proto.ColDateTime64).WithPrecision(proto.PrecisionNano),
		traceID:       new(proto.ColStr),
		spanID:        new(proto.ColStr),
		parentID:      new(proto.ColStr),
		state:         new(proto.ColStr),
		name:          new(proto.ColStr).LowCardinality(),
		kind:          new(proto.ColStr).LowCardinality(),
		service:       new(proto.ColStr).LowCardinality(),
		resAttrs:      strMap(),
		scopeName:     new(proto.ColStr),
		scopeVersion:  new(proto.ColStr),
		spanAttrs:     strMap(),
		duration:      new(proto.ColUInt64),
		statusCode:    new(proto.ColStr).LowCardinality(),
		statusMessage: new(proto.ColStr),
		evTS:          proto.NewArray[time.Time](new(proto.ColDateTime64).WithPrecision(proto.PrecisionNano)),
		evName:        proto.NewArray[string](new(proto.ColStr).LowCardinality()),
		evAttrs:       proto.NewArray[map[string]string](strMap()),
		linkTraceID:   proto.NewArray[string](new(proto.ColStr)),
		linkSpanID:    proto.NewArray[string](new(proto.ColStr)),
		linkState:     proto.NewArray[string](new(proto.ColStr)),
		linkAttrs:     proto.NewArray[map[string]string](strMap()),
	}
}

func (o *otelColumns) named() []struct {
	name string
	col  proto.Column
} {
	return []struct {
		name string
		col  proto.Column
	}{
		{"Timestamp", o.ts}, {"TraceId", o.traceID}, {"SpanId", o.spanID},
		{"ParentSpanId", o.parentID}, {"TraceState", o.state}, {"SpanName", o.name},
		{"SpanKind", o.kind}, {"ServiceName", o.service}, {"ResourceAttributes", o.resAttrs},
		{"ScopeName", o.scopeName}, {"ScopeVersion", o.scopeVersion}, {"SpanAttributes", o.spanAttrs},
		{"Duration", o.duration}, {"StatusCode", o.statusCode}, {"StatusMessage", o.statusMessage},
		{"Events.Timestamp", o.evTS}, {"Events.Name", o.evName}, {"Events.Attributes", o.evAttrs},
		{"Links.TraceId", o.linkTraceID}, {"Links.SpanId", o.linkSpanID},
		{"Links.TraceState", o.linkState}, {"Links.Attributes", o.linkAttrs},
	}
}

// Column is a column of otel_traces as the server describes it to clients.
type Column struct{ Name, Type string }

// Columns lists the insertable columns of otel_traces in table order, Nested
// flattened to arrays, as the server describes them for INSERT.
func Columns() []Column {
	var cs []Column
	for _, c := range newOtelColumns().named() {
		cs = append(cs, Column{Name: c.name, Type: string(c.col.Type())})
	}
	return cs
}

func (o *otelColumns) input() []proto.InputColumn {
	var in []proto.InputColumn
	for _, c := range o.named() {
		in = append(in, proto.InputColumn{Name: c.name, Data: c.col})
	}
	return in
}

func (o *otelColumns) results() proto.Results {
	var rs proto.Results
	for _, c := range o.named() {
		rs = append(rs, proto.ResultColumn{Name: c.name, Data: c.col})
	}
	return rs
}

func (o *otelColumns) row(i int) Row {
	return Row{
		Timestamp:          o.ts.Row(i),
		TraceID:            o.traceID.Row(i),
		SpanID:             o.spanID.Row(i),
		ParentSpanID:       o.parentID.Row(i),
		TraceState:         o.state.Row(i),
		SpanName:           o.name.Row(i),
		SpanKind:           o.kind.Row(i),
		ServiceName:        o.service.Row(i),
		ResourceAttributes: o.resAttrs.Row(i),
		ScopeName:          o.scopeName.Row(i),
		ScopeVersion:       o.scopeVersion.Row(i),
		SpanAttributes:     o.spanAttrs.Row(i),
		Duration:           o.duration.Row(i),
		StatusCode:         o.statusCode.Row(i),
		StatusMessage:      o.statusMessage.Row(i),
		Events:             len(o.evTS.Row(i)) + len(o.evName.Row(i)) + len(o.evAttrs.Row(i)),
		Links:              len(o.linkTraceID.Row(i)) + len(o.linkSpanID.Row(i)) + len(o.linkState.Row(i)) + len(o.linkAttrs.Row(i)),
	}
}

// insert answers an INSERT as ClickHouse does: it describes the table's
// columns, in text and in an empty data block, then reads data blocks until
// an empty one.
func (cc *conn) insert(compressed bool) error {
	if cc.cols == nil {
		cc.cols = newOtelColumns()
	}
	cols := cc.cols
	for _, c := range cols.named() {
		c.col.Reset()
	}
	var desc strings.Builder
	desc.WriteString("columns format version: 1\n")
	fmt.Fprintf(&desc, "%d columns:\n", len(cols.named()))
	for _, c := range cols.named() {
		fmt.Fprintf(&desc, "`%s` %s\n", c.name, c.col.Type())
	}
	proto.TableColumns{Second: desc.String()}.EncodeAware(&cc.buf, cc.ver)
	proto.ServerCodeData.Encode(&cc.buf)
	cc.buf.PutString("")
	start := len(cc.buf.Buf)
	header := proto.Block{Columns: len(cols.named()), Info: proto.BlockInfo{BucketNum: -1}}
	if err := header.EncodeBlock(&cc.buf, cc.ver, cols.input()); err != nil {
		return fmt.Errorf("encode header: %w", err)
	}
	if compressed {
		w := compress.NewWriter(compress.LevelZero, compress.LZ4)
		if err := w.Compress(cc.buf.Buf[start:]); err != nil {
			return err
		}
		cc.buf.Buf = append(cc.buf.Buf[:start], w.Data...)
	}
	if err := cc.flush(); err != nil {
		return err
	}

	for {
		rs := cols.results()
		b, err := cc.readBlock(compressed, rs)
		if err != nil {
			return fmt.Errorf("data block: %w", err)
		}
		if b.End() {
			return nil
		}
		cc.s.mu.Lock()
		cc.s.count += b.Rows
		countOnly := cc.s.countOnly
		cc.s.mu.Unlock()
		if countOnly {
			continue
		}
		rows := make([]Row, b.Rows)
		for i := range rows {
			rows[i] = cols.row(i)
		}
		cc.s.mu.Lock()
		cc.s.rows = append(cc.s.rows, rows...)
		cc.s.mu.Unlock()
	}
}
