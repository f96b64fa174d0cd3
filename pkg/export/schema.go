package export

import (
	"embed"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"
	"time"
)

// The DDL reproduces the OpenTelemetry Collector ClickHouse exporter's
// traces schema (exporter/clickhouseexporter, internal/sqltemplates):
// the otel_traces table, the otel_traces_trace_id_ts lookup table and the
// materialized view feeding it, so that Grafana's ClickHouse plugin in
// OpenTelemetry mode reads our spans with no configuration.
//
//go:embed schema/*.sql
var schemaFS embed.FS

var schemaTemplates = template.Must(template.New("schema").Funcs(template.FuncMap{
	"ident":  quoteIdent,
	"string": quoteString,
	"ttl":    ttlClause,
}).ParseFS(schemaFS, "schema/*.sql"))

// LocalSuffix names the tables that hold the rows on each node of a
// cluster, behind the Distributed tables of the configured names.
const LocalSuffix = "_local"

// DefaultReplicatedParams are the ReplicatedMergeTree arguments of a
// cluster's local tables when TableEngine names none: ClickHouse's own
// convention, a ZooKeeper path per shard and table and the node's replica
// name, from each server's {shard} and {replica} macros.
const DefaultReplicatedParams = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"

// Defaults of TracesSchema.
const (
	DefaultDatabase    = "otel"
	DefaultTracesTable = "otel_traces"
)

// TracesSchema names the ClickHouse tables spans are written to.
type TracesSchema struct {
	Database string        // DefaultDatabase when empty
	Table    string        // DefaultTracesTable when empty
	TTL      time.Duration // rows older than this are dropped; 0 keeps them forever

	// FullTextSearch selects text indexes instead of bloom filters, as the
	// collector does for ClickHouse >= 26.2.
	FullTextSearch bool

	// Cluster creates the schema on every node of this ClickHouse cluster
	// (ON CLUSTER, the collector's cluster_name): the rows go to tables
	// local to each node (Table+LocalSuffix, replicated by default), and a
	// Distributed table named Table in front of them shards the rows by
	// trace ID, so that a trace stays on one shard, where its lookup row is
	// computed. Queries and inserts use Table, as without a cluster.
	Cluster string
	// Engine of the tables that hold the rows (the collector's
	// table_engine); the trace ID lookup table takes its Aggregating
	// variant. Default MergeTree(), or with Cluster
	// ReplicatedMergeTree(DefaultReplicatedParams).
	Engine TableEngine
}

// TableEngine is a MergeTree-family table engine and its arguments, as the
// collector's table_engine option spells it.
type TableEngine struct {
	Name   string `yaml:"name"`   // e.g. ReplicatedMergeTree; must end in MergeTree
	Params string `yaml:"params"` // the arguments, SQL as written between the parentheses
}

var engineName = regexp.MustCompile(`^[A-Za-z]*MergeTree$`)

// Validate rejects an engine outside the MergeTree family, which the
// lookup table's Aggregating variant and the table's ORDER BY need.
func (e TableEngine) Validate() error {
	if e.Name == "" && e.Params != "" {
		return errors.New("table_engine.params without table_engine.name")
	}
	if e.Name != "" && !engineName.MatchString(e.Name) {
		return fmt.Errorf("table engine %q: want a MergeTree-family engine, e.g. ReplicatedMergeTree", e.Name)
	}
	return nil
}

func (s TracesSchema) withDefaults() TracesSchema {
	if s.Database == "" {
		s.Database = DefaultDatabase
	}
	if s.Table == "" {
		s.Table = DefaultTracesTable
	}
	switch {
	case s.Engine.Name != "":
	case s.Cluster != "":
		s.Engine = TableEngine{Name: "ReplicatedMergeTree", Params: DefaultReplicatedParams}
	default:
		s.Engine = TableEngine{Name: "MergeTree"}
	}
	return s
}

// Local names the table that holds the rows of table: table itself, or on
// a cluster the local table behind it.
func (s TracesSchema) Local(table string) string {
	if s.Cluster != "" {
		return table + LocalSuffix
	}
	return table
}

// OnCluster is the ON CLUSTER clause of every statement, with its leading
// space, or nothing without a cluster.
func (s TracesSchema) OnCluster() string {
	if s.Cluster == "" {
		return ""
	}
	return " ON CLUSTER " + quoteIdent(s.Cluster)
}

// TableEngine is the engine clause of the traces table.
func (s TracesSchema) TableEngine() string {
	return s.Engine.Name + "(" + s.Engine.Params + ")"
}

// LookupEngine is the engine clause of the trace ID lookup table: the
// Aggregating variant of the traces table's engine, with its arguments.
func (s TracesSchema) LookupEngine() string {
	return strings.TrimSuffix(s.Engine.Name, "MergeTree") + "AggregatingMergeTree(" + s.Engine.Params + ")"
}

// Statements returns the DDL creating the database (unless it is
// "default", which always exists and may be all a user is allowed to use),
// the traces table, the trace ID lookup table and its materialized view,
// and on a cluster the Distributed tables in front of the first two, each
// only if absent, in the order they must run.
func (s TracesSchema) Statements() ([]string, error) {
	if err := s.Engine.Validate(); err != nil {
		return nil, err
	}
	s = s.withDefaults()
	var stmts []string
	if s.Database != "default" {
		stmts = append(stmts, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(s.Database)+s.OnCluster())
	}
	type step struct {
		template string
		schema   TracesSchema
	}
	steps := []step{{"traces_table.sql", s}, {"traces_trace_id_ts_table.sql", s}, {"traces_trace_id_ts_mv.sql", s}}
	if s.Cluster != "" {
		lookup := s
		lookup.Table += "_trace_id_ts"
		steps = append(steps, step{"traces_distributed.sql", s}, step{"traces_distributed.sql", lookup})
	}
	for _, st := range steps {
		stmt, err := st.schema.render(st.template)
		if err != nil {
			return nil, err
		}
		stmts = append(stmts, stmt)
	}
	return stmts, nil
}

// InsertStatement returns the INSERT whose columns a batch fills, in the
// order ClickHouseExporter appends them.
func (s TracesSchema) InsertStatement() (string, error) {
	return s.withDefaults().render("traces_insert.sql")
}

func (s TracesSchema) render(name string) (string, error) {
	var sb strings.Builder
	if err := schemaTemplates.ExecuteTemplate(&sb, name, s); err != nil {
		return "", fmt.Errorf("render %s: %w", name, err)
	}
	return sb.String(), nil
}

// quoteString quotes a ClickHouse string literal.
func quoteString(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}

// quoteIdent quotes a ClickHouse identifier with backticks.
func quoteIdent(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "`" + strings.ReplaceAll(s, "`", "\\`") + "`"
}

// ttlClause renders a TTL clause on column in the largest whole unit of d.
func ttlClause(column string, d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("TTL %s + toIntervalDay(%d)", column, d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("TTL %s + toIntervalHour(%d)", column, d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("TTL %s + toIntervalMinute(%d)", column, d/time.Minute)
	default:
		return fmt.Sprintf("TTL %s + toIntervalSecond(%d)", column, (d+time.Second-1)/time.Second)
	}
}
