package export

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/chtest"
)

// collectorTableHead and collectorEngine render the parts of the
// collector's traces DDL that its cluster_name and table_engine options
// change, as exporter/clickhouseexporter v0.165.1 does:
// internal/sqltemplates/traces_table.sql opens with
// `CREATE TABLE IF NOT EXISTS %q.%q %s (` filled by database, table and
// tableClusterString() ("ON CLUSTER `name`"), and closes the column list with
// `) ENGINE = %s` filled by tableEngineString() ("Name(Params)"). The
// collector quotes database and table with %q, we with backticks; ClickHouse
// reads both alike.
func collectorTableHead(db, table, cluster string) string {
	return normSQL(strings.ReplaceAll(fmt.Sprintf("CREATE TABLE IF NOT EXISTS %q.%q %s", db, table,
		"ON CLUSTER `"+strings.ReplaceAll(cluster, "`", "``")+"`"), `"`, "`"))
}

func collectorEngine(e TableEngine) string { return fmt.Sprintf("ENGINE = %s(%s)", e.Name, e.Params) }

// checkClusterDDL asserts that stmts are the cluster DDL of database db on
// cluster c with the given engine: the collector's statements on local
// tables, ON CLUSTER, then a Distributed table of the configured name in
// front of each table, sharded by trace ID.
func checkClusterDDL(t *testing.T, stmts []string, db, c string, engine TableEngine, lookupEngine string) {
	t.Helper()
	if len(stmts) != 6 {
		t.Fatalf("%d DDL statements, want 6:\n%s", len(stmts), strings.Join(stmts, "\n---\n"))
	}
	onCluster := " ON CLUSTER `" + c + "`"
	if got, want := normSQL(stmts[0]), "CREATE DATABASE IF NOT EXISTS `"+db+"`"+onCluster; got != want {
		t.Errorf("database DDL %q, want %q", got, want)
	}

	head, defs, tail := splitDDL(t, stmts[1])
	if want := collectorTableHead(db, "otel_traces_local", c); head != want {
		t.Errorf("table DDL head %q, want the collector's %q", head, want)
	}
	if cols := defs[:min(len(defs), len(collectorTraceColumns))]; !slices.Equal(cols, collectorTraceColumns) {
		t.Errorf("local table columns differ from the collector's:\n got %q\nwant %q", cols, collectorTraceColumns)
	}
	if want := collectorEngine(engine) + " PARTITION BY toDate(Timestamp) PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp)) ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp) SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"; tail != want {
		t.Errorf("table DDL tail\n got %s\nwant %s", tail, want)
	}

	head, _, tail = splitDDL(t, stmts[2])
	if want := collectorTableHead(db, "otel_traces_trace_id_ts_local", c); head != want {
		t.Errorf("lookup table head %q, want %q", head, want)
	}
	if !strings.HasPrefix(tail, "ENGINE = "+lookupEngine+" PARTITION BY") {
		t.Errorf("lookup table tail %s, want engine %s", tail, lookupEngine)
	}

	// The view runs on each node: it reads the rows inserted there and
	// writes that node's lookup table.
	if got, want := normSQL(stmts[3]), "CREATE MATERIALIZED VIEW IF NOT EXISTS `"+db+"`.`otel_traces_trace_id_ts_mv`"+onCluster+" TO `"+db+"`.`otel_traces_trace_id_ts_local` AS SELECT TraceId, min(toDateTime(Timestamp)) AS Start, max(toDateTime(Timestamp)) AS End FROM `"+db+"`.`otel_traces_local` WHERE TraceId != '' GROUP BY TraceId"; got != want {
		t.Errorf("view DDL\n got %s\nwant %s", got, want)
	}

	// The names Grafana queries and the exporter inserts into.
	for i, table := range []string{"otel_traces", "otel_traces_trace_id_ts"} {
		want := "CREATE TABLE IF NOT EXISTS `" + db + "`.`" + table + "`" + onCluster +
			" AS `" + db + "`.`" + table + "_local` ENGINE = Distributed('" + c + "', '" + db + "', '" + table + "_local', cityHash64(TraceId))"
		if got := normSQL(stmts[4+i]); got != want {
			t.Errorf("distributed DDL\n got %s\nwant %s", got, want)
		}
	}
}

func TestClusterSchema(t *testing.T) {
	stmts, err := TracesSchema{Cluster: "tracing"}.Statements()
	if err != nil {
		t.Fatal(err)
	}
	checkClusterDDL(t, stmts, DefaultDatabase, "tracing",
		TableEngine{Name: "ReplicatedMergeTree", Params: DefaultReplicatedParams},
		"ReplicatedAggregatingMergeTree("+DefaultReplicatedParams+")")

	// The collector's table_engine, with macros of the user's own.
	engine := TableEngine{Name: "ReplicatedMergeTree", Params: "'/ch/{layer}-{shard}/otel_traces', '{host}'"}
	stmts, err = TracesSchema{Database: "tr", Cluster: "c2", Engine: engine}.Statements()
	if err != nil {
		t.Fatal(err)
	}
	checkClusterDDL(t, stmts, "tr", "c2", engine, "ReplicatedAggregatingMergeTree("+engine.Params+")")

	// Without a cluster the engine still applies, as the collector's does.
	stmts, err = TracesSchema{Engine: TableEngine{Name: "ReplicatedMergeTree"}}.Statements()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, tail := splitDDL(t, stmts[1]); !strings.HasPrefix(tail, "ENGINE = ReplicatedMergeTree() PARTITION BY") {
		t.Errorf("table engine not applied: %s", tail)
	}
	if strings.Contains(strings.Join(stmts, " "), "ON CLUSTER") {
		t.Errorf("ON CLUSTER without a cluster: %q", stmts)
	}

	for _, e := range []TableEngine{{Name: "Log"}, {Name: "MergeTree() ; DROP TABLE x; --"}, {Params: "'x'"}} {
		if _, err := (TracesSchema{Engine: e}).Statements(); err == nil {
			t.Errorf("engine %+v accepted", e)
		}
		if _, err := NewClickHouseExporter(ClickHouseConfig{Schema: TracesSchema{Engine: e}}); err == nil {
			t.Errorf("NewClickHouseExporter accepted engine %+v", e)
		}
	}
}

// TestClusterWire creates the cluster schema through the real client on
// the test server and inserts into the Distributed table, under the name
// the single-node schema uses.
func TestClusterWire(t *testing.T) {
	srv := chtest.New(t, 25, 8)
	_, spans := exportTestSpans(t, ClickHouseConfig{
		Addrs:  []string{srv.Addr()},
		Schema: TracesSchema{Cluster: "tracing", Database: "tracing"},
	})
	queries, rows := srv.Snapshot()
	if len(queries) != 7 {
		t.Fatalf("%d queries, want 6 DDL and 1 INSERT:\n%s", len(queries), strings.Join(queries, "\n---\n"))
	}
	checkClusterDDL(t, queries[:6], "tracing", "tracing",
		TableEngine{Name: "ReplicatedMergeTree", Params: DefaultReplicatedParams},
		"ReplicatedAggregatingMergeTree("+DefaultReplicatedParams+")")
	if !strings.HasPrefix(queries[6], "INSERT INTO `tracing`.`otel_traces` (") {
		t.Errorf("insert %q, want into the Distributed table", queries[6])
	}
	var want []chtest.Row
	for _, s := range spans {
		want = append(want, expectedRow(s))
	}
	compareRows(t, rows, want)
}

// TestClickHouseFailover gives the exporter two servers, one of them down:
// every batch lands on the other, first one way round, then the other.
func TestClickHouseFailover(t *testing.T) {
	a, b := chtest.New(t, 25, 8), chtest.New(t, 25, 8)
	a.Stop()
	for _, order := range []string{"in_order", "random"} {
		t.Run(order, func(t *testing.T) {
			exps, err := NewExporters(context.Background(), []ExporterConfig{{ClickHouse: &ClickHouseExporterConfig{
				Addrs:       []string{a.Addr(), b.Addr()},
				AddrsOrder:  order,
				DialTimeout: time.Second,
				Retries:     -1,
			}}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			e := exps["clickhouse"]
			defer e.Shutdown(context.Background())
			spans := testSpans()
			before := b.RowCount()
			for i := range 5 {
				// No retries: each batch must find the live server
				// on its first attempt.
				if err := e.Export(context.Background(), spans); err != nil {
					t.Fatalf("batch %d: %v", i, err)
				}
			}
			if got, want := b.RowCount()-before, 5*len(spans); got != want {
				t.Errorf("%d rows on the live server, want %d", got, want)
			}
		})
	}

	// The other way round, on a connection already open: the live server
	// goes away and the first one comes back.
	e, spans := exportTestSpans(t, ClickHouseConfig{Addrs: []string{a.Addr(), b.Addr()}, DialTimeout: time.Second, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	b.Stop()
	a.Start()
	if err := e.Export(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	if n := a.RowCount(); n != len(spans) {
		t.Errorf("%d rows on the server that came back, want %d", n, len(spans))
	}
}

// With random order, exporters spread their INSERTs over the servers: a
// fleet does not all land on the first address. Twenty exporters on two
// live servers all pick the same one with odds of 2 in a million.
func TestClickHouseRandomOrderSpreads(t *testing.T) {
	a, b := chtest.New(t, 25, 8), chtest.New(t, 25, 8)
	for range 20 {
		exportTestSpans(t, ClickHouseConfig{Addrs: []string{a.Addr(), b.Addr()}, RandomOrder: true, DialTimeout: time.Second})
	}
	if a.RowCount() == 0 || b.RowCount() == 0 {
		t.Errorf("rows %d on the first server, %d on the second: the exporters did not spread", a.RowCount(), b.RowCount())
	}
}

// exportTestSpans exports testSpans through a new exporter for cfg, which
// the test's end shuts down.
func exportTestSpans(t *testing.T, cfg ClickHouseConfig) (*ClickHouseExporter, []Span) {
	t.Helper()
	e, err := NewClickHouseExporter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	spans := testSpans()
	if err := e.Export(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	return e, spans
}
