package export

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/cilium-tracer/tracer/internal/chtest"
)

// TestClickHouseIntegration runs the exporter against a real ClickHouse
// (>= 21.10; current releases are the target) named by $CLICKHOUSE_ADDR, a
// native-protocol host:port, with $CLICKHOUSE_USER and $CLICKHOUSE_PASSWORD
// if needed. It creates and drops a database of its own.
func TestClickHouseIntegration(t *testing.T) {
	addr := os.Getenv("CLICKHOUSE_ADDR")
	if addr == "" {
		t.Skip("CLICKHOUSE_ADDR is not set: no real ClickHouse to test against " +
			"(set it to host:9000, plus CLICKHOUSE_USER/CLICKHOUSE_PASSWORD if needed)")
	}
	user := os.Getenv("CLICKHOUSE_USER")
	password, err := ClickHousePassword("")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db := fmt.Sprintf("tracer_test_%d", time.Now().UnixNano())

	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: []string{addr},
		Auth: clickhouse.Auth{Database: "default", Username: user, Password: password},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Cleanup(func() {
		if err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+quoteIdent(db)); err != nil {
			t.Errorf("drop %s: %v", db, err)
		}
	})

	e, err := NewClickHouseExporter(ClickHouseConfig{
		Addrs: []string{addr}, Username: user, Password: password,
		Schema: TracesSchema{Database: db, TTL: 24 * time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	spans := testSpans()
	if err := e.Export(ctx, spans[:3]); err != nil {
		t.Fatal(err)
	}
	if err := e.Export(ctx, spans[3:]); err != nil {
		t.Fatal(err)
	}
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	// The table as the server describes it.
	rows, err := conn.Query(ctx, `SELECT name, type, compression_codec, default_kind
		FROM system.columns WHERE database = ? AND table = 'otel_traces' ORDER BY position`, db)
	if err != nil {
		t.Fatal(err)
	}
	var got []flatColumn
	for rows.Next() {
		var c flatColumn
		var kind string
		if err := rows.Scan(&c.name, &c.typ, &c.codec, &kind); err != nil {
			t.Fatal(err)
		}
		c.alias = kind == "ALIAS"
		got = append(got, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := flattenedColumns(t)
	if len(got) != len(want) {
		t.Fatalf("server lists %d columns, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("column %d: server has %+v, want %+v", i, got[i], want[i])
		}
	}

	// The rows.
	rows, err = conn.Query(ctx, `SELECT Timestamp, TraceId, SpanId, ParentSpanId, TraceState,
		SpanName, SpanKind, ServiceName, ResourceAttributes, ScopeName, ScopeVersion,
		SpanAttributes, Duration, StatusCode, StatusMessage,
		length(Events.Timestamp), length(Links.TraceId)
		FROM `+quoteIdent(db)+`.otel_traces ORDER BY Timestamp, SpanId`)
	if err != nil {
		t.Fatal(err)
	}
	var gotRows []chtest.Row
	for rows.Next() {
		var r chtest.Row
		var events, links uint64
		if err := rows.Scan(&r.Timestamp, &r.TraceID, &r.SpanID, &r.ParentSpanID, &r.TraceState,
			&r.SpanName, &r.SpanKind, &r.ServiceName, &r.ResourceAttributes, &r.ScopeName, &r.ScopeVersion,
			&r.SpanAttributes, &r.Duration, &r.StatusCode, &r.StatusMessage, &events, &links); err != nil {
			t.Fatal(err)
		}
		r.Events, r.Links = int(events), int(links)
		gotRows = append(gotRows, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// testSpans' calls are in finishing order; the query sorts by start.
	order := []int{2, 1, 0, 5, 4, 3}
	var wantRows []chtest.Row
	for _, i := range order {
		wantRows = append(wantRows, expectedRow(spans[i]))
	}
	compareRows(t, gotRows, wantRows)

	// The materialized view feeds the trace ID lookup table.
	var traces uint64
	if err := conn.QueryRow(ctx, "SELECT uniqExact(TraceId) FROM "+quoteIdent(db)+".otel_traces_trace_id_ts").Scan(&traces); err != nil {
		t.Fatal(err)
	}
	if traces != 2 {
		t.Errorf("lookup table knows %d traces, want 2", traces)
	}

	// A call's syscalls and child processes: ordinary rows, children of
	// the call's.
	e, err = NewClickHouseExporter(ClickHouseConfig{Addrs: []string{addr}, Username: user, Password: password, SkipSchema: true,
		Schema: TracesSchema{Database: db}})
	if err != nil {
		t.Fatal(err)
	}
	call := NewSpanBuilder(testResource).Build(withSyscalls())
	if err := e.Export(ctx, []Span{call}); err != nil {
		t.Fatal(err)
	}
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err = conn.Query(ctx, `SELECT SpanName, Duration, StatusCode FROM `+quoteIdent(db)+`.otel_traces
		WHERE TraceId = ? AND ParentSpanId = ? ORDER BY Timestamp`, call.TraceID.String(), call.SpanID.String())
	if err != nil {
		t.Fatal(err)
	}
	var children []ClickHouseRow
	for rows.Next() {
		var r ClickHouseRow
		if err := rows.Scan(&r.SpanName, &r.Duration, &r.StatusCode); err != nil {
			t.Fatal(err)
		}
		children = append(children, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(children) != len(call.Children) {
		t.Fatalf("%d child rows of the call, want %d", len(children), len(call.Children))
	}
	for i, ch := range call.Children {
		w := NewClickHouseRow(&ch)
		if g := children[i]; g.SpanName != w.SpanName || g.Duration != w.Duration || g.StatusCode != w.StatusCode {
			t.Errorf("child row %d: %+v, want %+v", i, g, w)
		}
	}
}
