// Package grafana_test checks the Grafana provisioning and the dashboard
// against the otel_traces schema that pkg/export creates: every query must
// parse as ClickHouse SQL once Grafana and the ClickHouse plugin have expanded
// it, and may only name columns and attributes the exporter writes.
package grafana_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/AfterShip/clickhouse-sql-parser/parser"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	grafanadash "github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"go.yaml.in/yaml/v3"

	"github.com/cilium-tracer/tracer/pkg/export"
	"github.com/cilium-tracer/tracer/pkg/goroutine"
)

const (
	dashboardFile   = "dashboards/cilium-agent-internals.json"
	datasourcesFile = "provisioning/datasources/clickhouse.yaml"
	dashboardsFile  = "provisioning/dashboards/dashboards.yaml"

	clickhouseType = "grafana-clickhouse-datasource"
	prometheusType = "prometheus"
)

// schema maps "database.table" to the set of its columns, as created by the
// exporter's DDL; nested columns appear both as "Events" and "Events.Name".
type schema map[string]map[string]bool

func loadSchema(t *testing.T, ts export.TracesSchema) schema {
	t.Helper()
	stmts, err := ts.Statements()
	if err != nil {
		t.Fatal(err)
	}
	s := schema{}
	for _, stmt := range stmts {
		if strings.HasPrefix(stmt, "CREATE TABLE") {
			stmt = quoteColumnNames(stmt)
		}
		parsed, err := parser.NewParser(stmt).ParseStmts()
		if err != nil {
			t.Fatalf("exporter DDL does not parse: %v\n%s", err, stmt)
		}
		ct, ok := parsed[0].(*parser.CreateTable)
		if !ok || ct.TableSchema == nil {
			continue
		}
		if like := ct.TableSchema.AliasTable; like != nil {
			// A cluster's Distributed table: the columns of the local
			// table it stands in front of.
			s[tableName(ct.Name)] = s[tableName(like)]
			continue
		}
		cols := map[string]bool{}
		for _, c := range ct.TableSchema.Columns {
			def, ok := c.(*parser.ColumnDef)
			if !ok {
				continue
			}
			name := identName(def.Name)
			cols[name] = true
			if nested, ok := def.Type.(*parser.NestedType); ok {
				for _, nc := range nested.Columns {
					if nd, ok := nc.(*parser.ColumnDef); ok {
						cols[name+"."+identName(nd.Name)] = true
					}
				}
			}
		}
		s[tableName(ct.Name)] = cols
	}
	for _, want := range []string{"otel.otel_traces", "otel.otel_traces_trace_id_ts"} {
		if s[want] == nil {
			t.Fatalf("exporter DDL creates tables %v, want the traces table and its trace ID lookup table", slices.Sorted(mapKeys(s)))
		}
	}
	return s
}

// columnDef matches the start of a column definition in the exporter's DDL,
// one per line.
var columnDef = regexp.MustCompile(`(?m)^([ \t]+)([A-Za-z_]\w*)([ \t])`)

// quoteColumnNames backquotes the column names of a CREATE TABLE: the parser
// takes End (a column of the trace ID table) for the END keyword, which
// ClickHouse does not. Quoting leaves the statement's meaning unchanged.
func quoteColumnNames(stmt string) string {
	return columnDef.ReplaceAllStringFunc(stmt, func(m string) string {
		g := columnDef.FindStringSubmatch(m)
		switch g[2] {
		case "INDEX", "PROJECTION", "CONSTRAINT":
			return m
		}
		return g[1] + "`" + g[2] + "`" + g[3]
	})
}

func identName(n *parser.NestedIdentifier) string {
	if n.DotIdent != nil {
		return n.Ident.Name + "." + n.DotIdent.Name
	}
	return n.Ident.Name
}

func tableName(t *parser.TableIdentifier) string {
	if t.Database == nil {
		return t.Table.Name
	}
	return t.Database.Name + "." + t.Table.Name
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// attributeKeys are the map keys the exporter writes, per map column.
func attributeKeys() map[string]map[string]bool {
	span := map[string]bool{}
	for _, k := range []string{
		string(export.AttrFunction), string(export.AttrFile), string(export.AttrLine),
		string(export.AttrStacktrace), string(export.AttrGoroutine),
		string(export.AttrSampleRate), string(export.AttrMinDuration),
		string(export.AttrBreakdownSamples), string(export.AttrBreakdownCPU),
		string(export.AttrBreakdownRunnable), string(export.AttrBreakdownSyscall),
		string(export.AttrErrorType), string(export.AttrErrorMessage),
	} {
		span[k] = true
	}
	for c := goroutine.Category(0); c.String() != "unknown"; c++ {
		span[export.AttrBlockedPrefix+strings.ReplaceAll(c.String(), " ", "_")+"_ns"] = true
	}
	res := map[string]bool{}
	full := export.Resource{ServiceName: "s", HostName: "h", ContainerID: "c", PID: 1, CiliumVersion: "v", GoVersion: "go"}
	for _, kv := range full.Attributes() {
		res[string(kv.Key)] = true
	}
	return map[string]map[string]bool{"SpanAttributes": span, "ResourceAttributes": res}
}

// checker validates one expanded query against the schema.
type checker struct {
	schema schema
	attrs  map[string]map[string]bool
}

func (c checker) check(sql string) error {
	stmts, err := parser.NewParser(sql).ParseStmts()
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	if len(stmts) != 1 {
		return fmt.Errorf("%d statements, want 1", len(stmts))
	}
	q, ok := stmts[0].(*parser.SelectQuery)
	if !ok {
		return fmt.Errorf("statement is %T, want SELECT", stmts[0])
	}
	return c.checkSelect(q)
}

// checkSelect checks the identifiers of one SELECT against the columns of
// its single FROM table; subqueries are checked against their own tables.
func (c checker) checkSelect(q *parser.SelectQuery) error {
	var tables []string
	var subqueries []*parser.SelectQuery
	var errs []error
	skip := map[*parser.Ident]bool{}         // names that are not column references
	names := map[string]bool{}               // aliases and lambda parameters
	type mapKey struct{ column, key string } // SpanAttributes['code.function']
	var keys []mapKey
	var paths []string

	// walk visits q without descending into subqueries.
	walk := func(fn func(parser.Expr)) {
		parser.Walk(q, func(n parser.Expr) bool {
			if sq, ok := n.(*parser.SelectQuery); ok && sq != q {
				return false
			}
			fn(n)
			return true
		})
	}
	walk(func(n parser.Expr) {
		switch n := n.(type) {
		case *parser.SubQuery:
			if n.Select != nil {
				subqueries = append(subqueries, n.Select)
			}
		case *parser.TableIdentifier:
			tables = append(tables, tableName(n))
			skip[n.Table] = true
			if n.Database != nil {
				skip[n.Database] = true
			}
		case *parser.FunctionExpr:
			skip[n.Name] = true
		case *parser.IntervalExpr:
			skip[n.Unit] = true
		case *parser.SelectItem:
			if n.Alias != nil {
				skip[n.Alias] = true
				names[n.Alias.Name] = true
			}
		case *parser.AliasExpr:
			if id, ok := n.Alias.(*parser.Ident); ok {
				skip[id] = true
				names[id.Name] = true
			}
		case *parser.BinaryOperation:
			if n.Operation == parser.TokenKindArrow {
				parser.Walk(n.LeftExpr, func(p parser.Expr) bool {
					if id, ok := p.(*parser.Ident); ok {
						skip[id] = true
						names[id.Name] = true
					}
					return true
				})
			}
		case *parser.Path:
			var parts []string
			for _, f := range n.Fields {
				skip[f] = true
				parts = append(parts, f.Name)
			}
			paths = append(paths, strings.Join(parts, "."))
		case *parser.ObjectParams:
			obj, ok := n.Object.(*parser.Ident)
			if !ok || n.Params == nil || n.Params.Items == nil || len(n.Params.Items.Items) != 1 {
				break
			}
			item := n.Params.Items.Items[0]
			if ce, ok := item.(*parser.ColumnExpr); ok {
				item = ce.Expr
			}
			if lit, ok := item.(*parser.StringLiteral); ok {
				keys = append(keys, mapKey{obj.Name, lit.Literal})
			}
		}
	})
	if len(tables) != 1 {
		return fmt.Errorf("SELECT reads tables %v, want exactly one", tables)
	}
	cols, ok := c.schema[tables[0]]
	if !ok {
		return fmt.Errorf("table %s is not created by the exporter (tables: %v)", tables[0], slices.Sorted(mapKeys(c.schema)))
	}
	walk(func(n parser.Expr) {
		id, ok := n.(*parser.Ident)
		if !ok || skip[id] || cols[id.Name] || names[id.Name] {
			return
		}
		errs = append(errs, fmt.Errorf("column %s is not in %s", id.Name, tables[0]))
	})
	for _, p := range paths {
		if !cols[p] {
			errs = append(errs, fmt.Errorf("column %s is not in %s", p, tables[0]))
		}
	}
	for _, k := range keys {
		known, isMap := c.attrs[k.column]
		if isMap && !known[k.key] {
			errs = append(errs, fmt.Errorf("%s['%s']: the exporter writes no such attribute (it writes %v)", k.column, k.key, slices.Sorted(mapKeys(known))))
		}
	}
	for _, sq := range subqueries {
		if err := c.checkSelect(sq); err != nil {
			errs = append(errs, fmt.Errorf("subquery: %w", err))
		}
	}
	return errors.Join(errs...)
}

// selection is the state of the dashboard's template variables.
type selection struct {
	name   string
	values map[string][]string // nil: "All" selected
}

var selections = []selection{
	{name: "all selected"},
	{name: "values selected", values: map[string][]string{
		"service":  {"cilium-agent"},
		"host":     {"node-1", "node-2"},
		"function": {"endpoint.(*Endpoint).regenerateBPF"},
	}},
}

// expand does what Grafana and the ClickHouse plugin do to a query before
// ClickHouse sees it: template variables (frontend), $__conditionalAll
// (frontend), then the plugin's macros (backend), for a one-hour range and a
// 20 s interval. Link variables (${__value.raw}, ...) get sample values.
func expand(sql string, sel selection) (string, error) {
	const from, to, interval = 1767222000, 1767225600, 20
	value := func(name string) string {
		if v := sel.values[name]; len(v) > 0 {
			return v[0]
		}
		return "a value"
	}
	var err error
	sql, err = replaceMacro(sql, "$__conditionalAll", func(args []string) (string, error) {
		if len(args) != 2 {
			return "", fmt.Errorf("$__conditionalAll takes 2 arguments, got %d", len(args))
		}
		name := strings.Trim(strings.TrimSpace(args[1]), "${}")
		if sel.values[name] == nil {
			return "1=1", nil
		}
		return args[0], nil
	})
	if err != nil {
		return "", err
	}
	r := strings.NewReplacer(
		"${__value.raw}", "0af7651916cd43dd8448eb211c80319c",
	)
	sql = r.Replace(sql)
	for _, name := range []string{"service", "host", "function"} {
		vals := sel.values[name]
		if vals == nil {
			vals = []string{"all-1", "all-2"}
		}
		quoted := make([]string, len(vals))
		for i, v := range vals {
			quoted[i] = "'" + strings.ReplaceAll(v, "'", `\'`) + "'"
		}
		sql = strings.ReplaceAll(sql, "${"+name+":singlequote}", strings.Join(quoted, ","))
		sql = strings.ReplaceAll(sql, "${"+name+"}", value(name))
		sql = strings.ReplaceAll(sql, "$"+name, value(name))
	}
	macros := map[string]func([]string) (string, error){
		"$__timeFilter": func(a []string) (string, error) {
			if len(a) != 1 {
				return "", fmt.Errorf("$__timeFilter takes 1 argument, got %d", len(a))
			}
			return fmt.Sprintf("%s >= toDateTime(%d) AND %s <= toDateTime(%d)", a[0], from, a[0], to), nil
		},
		"$__timeInterval": func(a []string) (string, error) {
			if len(a) != 1 {
				return "", fmt.Errorf("$__timeInterval takes 1 argument, got %d", len(a))
			}
			return fmt.Sprintf("toStartOfInterval(toDateTime(%s), INTERVAL %d second)", a[0], interval), nil
		},
	}
	for _, name := range []string{"$__timeFilter", "$__timeInterval"} {
		if sql, err = replaceMacro(sql, name, macros[name]); err != nil {
			return "", err
		}
	}
	sql = strings.ReplaceAll(sql, "$__interval_s", fmt.Sprint(interval))
	if i := strings.IndexByte(sql, '$'); i >= 0 {
		return "", fmt.Errorf("unexpanded variable or macro at %q", sql[i:min(len(sql), i+30)])
	}
	return sql, nil
}

// replaceMacro replaces every call name(args...) in sql by fn(args); args
// are split at top-level commas, outside parentheses and quotes.
func replaceMacro(sql, name string, fn func([]string) (string, error)) (string, error) {
	var out strings.Builder
	for {
		i := strings.Index(sql, name+"(")
		if i < 0 {
			out.WriteString(sql)
			return out.String(), nil
		}
		out.WriteString(sql[:i])
		rest := sql[i+len(name)+1:]
		var args []string
		depth, start, end := 0, 0, -1
		var quote byte
	scan:
		for j := 0; j < len(rest); j++ {
			ch := rest[j]
			switch {
			case quote != 0:
				if ch == '\\' {
					j++
				} else if ch == quote {
					quote = 0
				}
			case ch == '\'' || ch == '"' || ch == '`':
				quote = ch
			case ch == '(':
				depth++
			case ch == ')' && depth > 0:
				depth--
			case ch == ')':
				args = append(args, strings.TrimSpace(rest[start:j]))
				end = j
				break scan
			case ch == ',' && depth == 0:
				args = append(args, strings.TrimSpace(rest[start:j]))
				start = j + 1
			}
		}
		if end < 0 {
			return "", fmt.Errorf("%s: unbalanced parentheses", name)
		}
		repl, err := fn(args)
		if err != nil {
			return "", err
		}
		out.WriteString(repl)
		sql = rest[end+1:]
	}
}

type dashboard struct {
	UID           string                    `json:"uid"`
	Title         string                    `json:"title"`
	SchemaVersion int                       `json:"schemaVersion"`
	Panels        []panel                   `json:"panels"`
	Templating    struct{ List []variable } `json:"templating"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int                 `json:"id"`
	Type        string              `json:"type"`
	Title       string              `json:"title"`
	Repeat      string              `json:"repeat"`
	Datasource  *dsRef              `json:"datasource"`
	GridPos     *struct{ H, W int } `json:"gridPos"`
	Targets     []target            `json:"targets"`
	FieldConfig json.RawMessage     `json:"fieldConfig"`
}

type target struct {
	RefID      string `json:"refId"`
	Datasource *dsRef `json:"datasource"`
	EditorType string `json:"editorType"`
	Format     *int   `json:"format"`
	RawSQL     string `json:"rawSql"`
	Expr       string `json:"expr"`
}

type variable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Datasource *dsRef `json:"datasource"`
	Query      string `json:"query"`
}

type link struct {
	Title string `json:"title"`
	URL   string `json:"url"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// links returns the data links anywhere in a panel's field config.
func links(t *testing.T, p panel) []link {
	t.Helper()
	var found []link
	var visit func(v any)
	visit = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if id, _ := v["id"].(string); id == "links" {
				b, _ := json.Marshal(v["value"])
				var ls []link
				if err := json.Unmarshal(b, &ls); err != nil {
					t.Fatalf("panel %q: links: %v", p.Title, err)
				}
				found = append(found, ls...)
			}
			if ls, ok := v["links"].([]any); ok {
				b, _ := json.Marshal(ls)
				var lk []link
				if err := json.Unmarshal(b, &lk); err != nil {
					t.Fatalf("panel %q: links: %v", p.Title, err)
				}
				found = append(found, lk...)
			}
			for _, x := range v {
				visit(x)
			}
		case []any:
			for _, x := range v {
				visit(x)
			}
		}
	}
	var fc any
	if len(p.FieldConfig) > 0 {
		if err := json.Unmarshal(p.FieldConfig, &fc); err != nil {
			t.Fatalf("panel %q: fieldConfig: %v", p.Title, err)
		}
	}
	visit(fc)
	return found
}

// exploreQueries returns the ClickHouse queries of an Explore link.
func exploreQueries(t *testing.T, rawURL string) []target {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("link %q: %v", rawURL, err)
	}
	if u.Path != "/explore" {
		t.Fatalf("link %q does not open Explore", rawURL)
	}
	var panes map[string]struct {
		Datasource string   `json:"datasource"`
		Queries    []target `json:"queries"`
	}
	if err := json.Unmarshal([]byte(u.Query().Get("panes")), &panes); err != nil {
		t.Fatalf("link %q: panes: %v", rawURL, err)
	}
	var qs []target
	for _, p := range panes {
		qs = append(qs, p.Queries...)
	}
	return qs
}

type query struct {
	where string
	sql   string
}

// clickhouseQueries returns every ClickHouse query of the dashboard: panel
// targets, template variables and the queries behind data links.
func clickhouseQueries(t *testing.T, d dashboard) []query {
	t.Helper()
	var qs []query
	for _, v := range d.Templating.List {
		if v.Datasource != nil && v.Datasource.Type == clickhouseType {
			qs = append(qs, query{"variable " + v.Name, v.Query})
		}
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if tg.Datasource != nil && tg.Datasource.Type == clickhouseType {
				qs = append(qs, query{fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.RawSQL})
			}
		}
		for _, l := range links(t, p) {
			for _, tg := range exploreQueries(t, l.URL) {
				qs = append(qs, query{fmt.Sprintf("panel %q link %q", p.Title, l.Title), tg.RawSQL})
			}
		}
	}
	return qs
}

// The queries read the same tables whether the exporter created them on one
// server or, with a cluster, as Distributed tables in front of local ones.
func TestDashboardQueriesMatchSchema(t *testing.T) {
	for _, ts := range []export.TracesSchema{{}, {Cluster: "tracing"}} {
		t.Run("cluster="+ts.Cluster, func(t *testing.T) { checkDashboardQueries(t, ts) })
	}
}

func checkDashboardQueries(t *testing.T, ts export.TracesSchema) {
	c := checker{schema: loadSchema(t, ts), attrs: attributeKeys()}
	qs := clickhouseQueries(t, loadDashboard(t))
	if len(qs) < 10 {
		t.Fatalf("found %d ClickHouse queries in the dashboard, want every panel's, variable's and link's", len(qs))
	}
	for _, sel := range selections {
		for _, q := range qs {
			if strings.TrimSpace(q.sql) == "" {
				t.Errorf("%s: empty query", q.where)
				continue
			}
			sql, err := expand(q.sql, sel)
			if err != nil {
				t.Errorf("%s (%s): %v", q.where, sel.name, err)
				continue
			}
			if err := c.check(sql); err != nil {
				t.Errorf("%s (%s): %v\n%s", q.where, sel.name, err, sql)
			}
		}
	}
}

// TestCheckerRejects keeps the schema check honest: it must fail queries
// that ClickHouse would reject or that read what the exporter never writes.
func TestCheckerRejects(t *testing.T) {
	c := checker{schema: loadSchema(t, export.TracesSchema{}), attrs: attributeKeys()}
	for _, sql := range []string{
		"SELECT Durations FROM otel.otel_traces",
		"SELECT count() FROM otel.otel_traces WHERE Events.Nme = 'x'",
		"SELECT SpanAttributes['code.func'] FROM otel.otel_traces",
		"SELECT ResourceAttributes['k8s.pod.name'] FROM otel.otel_traces",
		"SELECT Duration FROM otel.otel_logs",
		"SELECT TraceId FROM otel.otel_traces WHERE Timestamp >= (SELECT min(Duration) FROM otel.otel_traces_trace_id_ts)",
		"SELECT Duration FROM otel.otel_traces WHERE",
		"SELECT quantile(0.5)(Duration FROM otel.otel_traces",
		"SELECT x -> y FROM otel.otel_traces GROUP BY z",
	} {
		if err := c.check(sql); err == nil {
			t.Errorf("accepted %q", sql)
		}
	}
	for _, sql := range []string{
		"SELECT Events.Name, Links.TraceId FROM otel.otel_traces",
		"SELECT arrayMap(k -> SpanAttributes[k], mapKeys(SpanAttributes)) AS v FROM otel.otel_traces",
	} {
		if err := c.check(sql); err != nil {
			t.Errorf("rejected %q: %v", sql, err)
		}
	}
}

func TestExpand(t *testing.T) {
	got, err := expand("SELECT $__timeInterval(Timestamp) AS t FROM x WHERE $__timeFilter(Timestamp) AND $__conditionalAll(f(a, ')') IN (${host:singlequote}), $host)", selections[1])
	if err != nil {
		t.Fatal(err)
	}
	want := "SELECT toStartOfInterval(toDateTime(Timestamp), INTERVAL 20 second) AS t FROM x WHERE Timestamp >= toDateTime(1767222000) AND Timestamp <= toDateTime(1767225600) AND f(a, ')') IN ('node-1','node-2')"
	if got != want {
		t.Errorf("expand:\n got %s\nwant %s", got, want)
	}
	if _, err := expand("SELECT $__unknownMacro(x)", selections[0]); err == nil {
		t.Error("an unknown macro expanded without error")
	}
}

type provisionedDatasources struct {
	APIVersion  int `yaml:"apiVersion"`
	Datasources []struct {
		Name     string         `yaml:"name"`
		UID      string         `yaml:"uid"`
		Type     string         `yaml:"type"`
		URL      string         `yaml:"url"`
		JSONData map[string]any `yaml:"jsonData"`
	} `yaml:"datasources"`
}

// tracesConfig is the plugin's jsonData.traces (CHTracesConfig in the
// plugin's src/types/config.ts); decoding with known fields only catches a
// misspelled key, which Grafana would silently ignore.
type tracesConfig struct {
	DefaultDatabase                     string `yaml:"defaultDatabase"`
	DefaultTable                        string `yaml:"defaultTable"`
	OtelEnabled                         bool   `yaml:"otelEnabled"`
	OtelVersion                         string `yaml:"otelVersion"`
	TraceIDColumn                       string `yaml:"traceIdColumn"`
	SpanIDColumn                        string `yaml:"spanIdColumn"`
	OperationNameColumn                 string `yaml:"operationNameColumn"`
	ParentSpanIDColumn                  string `yaml:"parentSpanIdColumn"`
	ServiceNameColumn                   string `yaml:"serviceNameColumn"`
	DurationColumn                      string `yaml:"durationColumn"`
	DurationUnit                        string `yaml:"durationUnit"`
	StartTimeColumn                     string `yaml:"startTimeColumn"`
	TagsColumn                          string `yaml:"tagsColumn"`
	ServiceTagsColumn                   string `yaml:"serviceTagsColumn"`
	KindColumn                          string `yaml:"kindColumn"`
	StatusCodeColumn                    string `yaml:"statusCodeColumn"`
	StatusMessageColumn                 string `yaml:"statusMessageColumn"`
	StateColumn                         string `yaml:"stateColumn"`
	InstrumentationLibraryNameColumn    string `yaml:"instrumentationLibraryNameColumn"`
	InstrumentationLibraryVersionColumn string `yaml:"instrumentationLibraryVersionColumn"`
	FlattenNested                       bool   `yaml:"flattenNested"`
	TraceEventsColumnPrefix             string `yaml:"traceEventsColumnPrefix"`
	TraceLinksColumnPrefix              string `yaml:"traceLinksColumnPrefix"`
	TraceTimestampTableSuffix           string `yaml:"traceTimestampTableSuffix"`
}

func loadDatasources(t *testing.T) provisionedDatasources {
	t.Helper()
	b, err := os.ReadFile(datasourcesFile)
	if err != nil {
		t.Fatal(err)
	}
	var p provisionedDatasources
	if err := yaml.Unmarshal(b, &p); err != nil {
		t.Fatalf("%s: %v", datasourcesFile, err)
	}
	return p
}

func TestDatasourceProvisioning(t *testing.T) {
	p := loadDatasources(t)
	if p.APIVersion != 1 {
		t.Errorf("apiVersion = %d, want 1", p.APIVersion)
	}
	types := map[string]int{}
	for _, ds := range p.Datasources {
		if ds.Name == "" || ds.UID == "" || ds.Type == "" {
			t.Errorf("datasource %+v lacks name, uid or type", ds)
		}
		types[ds.Type]++
		switch ds.Type {
		case prometheusType:
			if ds.URL == "" {
				t.Errorf("datasource %s: no url", ds.Name)
			}
		case clickhouseType:
			checkClickHouseJSONData(t, ds.Name, ds.JSONData)
		default:
			t.Errorf("datasource %s: unexpected type %s", ds.Name, ds.Type)
		}
	}
	if types[clickhouseType] != 1 || types[prometheusType] != 1 {
		t.Errorf("datasource types %v, want one ClickHouse and one Prometheus", types)
	}
}

func checkClickHouseJSONData(t *testing.T, name string, jd map[string]any) {
	t.Helper()
	for _, k := range []string{"host", "port", "protocol", "username", "defaultDatabase"} {
		if jd[k] == nil || jd[k] == "" {
			t.Errorf("datasource %s: jsonData.%s missing", name, k)
		}
	}
	if p := jd["protocol"]; p != "native" && p != "http" {
		t.Errorf("datasource %s: protocol %v, want native or http", name, p)
	}
	if jd["defaultDatabase"] != export.DefaultDatabase {
		t.Errorf("datasource %s: defaultDatabase %v, want the exporter's %s", name, jd["defaultDatabase"], export.DefaultDatabase)
	}
	raw, err := yaml.Marshal(jd["traces"])
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	var tc tracesConfig
	if err := dec.Decode(&tc); err != nil {
		t.Fatalf("datasource %s: jsonData.traces: %v", name, err)
	}
	if !tc.OtelEnabled {
		t.Errorf("datasource %s: traces.otelEnabled is false", name)
	}
	if tc.DefaultDatabase != export.DefaultDatabase || tc.DefaultTable != export.DefaultTracesTable {
		t.Errorf("datasource %s: traces table %s.%s, want the exporter's %s.%s", name,
			tc.DefaultDatabase, tc.DefaultTable, export.DefaultDatabase, export.DefaultTracesTable)
	}
	// Duration is written in nanoseconds (UInt64).
	if tc.DurationUnit != "nanoseconds" {
		t.Errorf("datasource %s: traces.durationUnit %q, want nanoseconds", name, tc.DurationUnit)
	}
	s := loadSchema(t, export.TracesSchema{})
	table := export.DefaultDatabase + "." + export.DefaultTracesTable
	for key, col := range map[string]string{
		"traceIdColumn": tc.TraceIDColumn, "spanIdColumn": tc.SpanIDColumn,
		"operationNameColumn": tc.OperationNameColumn, "parentSpanIdColumn": tc.ParentSpanIDColumn,
		"serviceNameColumn": tc.ServiceNameColumn, "durationColumn": tc.DurationColumn,
		"startTimeColumn": tc.StartTimeColumn, "tagsColumn": tc.TagsColumn,
		"serviceTagsColumn": tc.ServiceTagsColumn, "kindColumn": tc.KindColumn,
		"statusCodeColumn": tc.StatusCodeColumn, "statusMessageColumn": tc.StatusMessageColumn,
		"stateColumn": tc.StateColumn, "instrumentationLibraryNameColumn": tc.InstrumentationLibraryNameColumn,
		"instrumentationLibraryVersionColumn": tc.InstrumentationLibraryVersionColumn,
		"traceEventsColumnPrefix":             tc.TraceEventsColumnPrefix, "traceLinksColumnPrefix": tc.TraceLinksColumnPrefix,
	} {
		if !s[table][col] {
			t.Errorf("datasource %s: traces.%s = %q is not a column of %s", name, key, col, table)
		}
	}
	if _, ok := s[table+tc.TraceTimestampTableSuffix]; !ok {
		t.Errorf("datasource %s: traces.traceTimestampTableSuffix %q names no table the exporter creates", name, tc.TraceTimestampTableSuffix)
	}
}

func TestDashboardProvisioning(t *testing.T) {
	b, err := os.ReadFile(dashboardsFile)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(b, &p); err != nil {
		t.Fatalf("%s: %v", dashboardsFile, err)
	}
	if p.APIVersion != 1 || len(p.Providers) == 0 {
		t.Fatalf("%s: apiVersion %d with %d providers, want 1 and at least one", dashboardsFile, p.APIVersion, len(p.Providers))
	}
	for _, pr := range p.Providers {
		if pr.Name == "" || pr.Type != "file" || !filepath.IsAbs(pr.Options.Path) {
			t.Errorf("provider %+v: want a name, type file and an absolute options.path", pr)
		}
	}
}

// TestDashboardSchema decodes the dashboard strictly with the types
// generated from Grafana's own dashboard and panel schemas: an unknown or
// misplaced key, or a field the schema requires, fails.
func TestDashboardSchema(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanadash.Dashboard
	// UnmarshalJSONStrict returns a nil cog.BuildErrors, a non-nil error
	// interface, when the dashboard is valid.
	var errs cog.BuildErrors
	if err := d.UnmarshalJSONStrict(b); err != nil && !(errors.As(err, &errs) && len(errs) == 0) {
		t.Errorf("%s: %v", dashboardFile, err)
	}
}

func TestDashboardStructure(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want uid, title and schemaVersion >= 36", d.UID, d.Title, d.SchemaVersion)
	}
	uids := map[string]string{}
	for _, ds := range loadDatasources(t).Datasources {
		uids[ds.UID] = ds.Type
	}
	resolves := func(ref *dsRef) bool { return ref != nil && uids[ref.UID] == ref.Type }

	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "query" && !resolves(v.Datasource) {
			t.Errorf("variable %s: datasource %+v is not provisioned", v.Name, v.Datasource)
		}
	}
	for _, want := range []string{"service", "host", "function"} {
		if !vars[want] {
			t.Errorf("no template variable %s", want)
		}
	}

	ids := map[int]bool{}
	kinds := map[string]bool{}
	traceLinks := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: duplicate id %d", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "" || p.Title == "" || p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %d: wants type, title and gridPos", p.ID)
		}
		if p.Type == "row" {
			continue
		}
		if !resolves(p.Datasource) {
			t.Errorf("panel %q: datasource %+v is not provisioned", p.Title, p.Datasource)
		}
		if p.Repeat != "" && !vars[p.Repeat] {
			t.Errorf("panel %q repeats over unknown variable %s", p.Title, p.Repeat)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, tg := range p.Targets {
			if !resolves(tg.Datasource) || tg.RefID == "" {
				t.Errorf("panel %q target %q: datasource %+v is not provisioned", p.Title, tg.RefID, tg.Datasource)
			}
			switch tg.Datasource.Type {
			case clickhouseType:
				kinds["clickhouse"] = true
				if tg.EditorType != "sql" || tg.Format == nil {
					t.Errorf("panel %q target %s: want editorType sql and a format", p.Title, tg.RefID)
				}
			case prometheusType:
				kinds["prometheus"] = true
				if tg.Expr == "" {
					t.Errorf("panel %q target %s: empty PromQL", p.Title, tg.RefID)
				}
			}
		}
		for _, l := range links(t, p) {
			for _, q := range exploreQueries(t, l.URL) {
				if !resolves(q.Datasource) || q.Format == nil || *q.Format != 3 {
					t.Errorf("panel %q link %q: want a query on a provisioned datasource with format 3 (trace)", p.Title, l.Title)
				}
				if strings.Contains(q.RawSQL, "${__value.raw}") {
					traceLinks++
				}
			}
		}
	}
	if !kinds["clickhouse"] || !kinds["prometheus"] {
		t.Errorf("query kinds %v: want ClickHouse panels and Prometheus (tracer health) panels", kinds)
	}
	if traceLinks < 2 {
		t.Errorf("%d trace links, want the slowest and unfinished calls to link to their traces", traceLinks)
	}
}
