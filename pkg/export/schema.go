package export

import (
	"embed"
	"fmt"
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
	"ident": quoteIdent,
	"ttl":   ttlClause,
}).ParseFS(schemaFS, "schema/*.sql"))

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
}

func (s TracesSchema) withDefaults() TracesSchema {
	if s.Database == "" {
		s.Database = DefaultDatabase
	}
	if s.Table == "" {
		s.Table = DefaultTracesTable
	}
	return s
}

// Statements returns the DDL creating the database (unless it is
// "default", which always exists and may be all a user is allowed to use),
// the traces table, the trace ID lookup table and its materialized view,
// each only if absent, in the order they must run.
func (s TracesSchema) Statements() ([]string, error) {
	s = s.withDefaults()
	var stmts []string
	if s.Database != "default" {
		stmts = append(stmts, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(s.Database))
	}
	for _, name := range []string{"traces_table.sql", "traces_trace_id_ts_table.sql", "traces_trace_id_ts_mv.sql"} {
		stmt, err := s.render(name)
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
