package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cilium-tracer/tracer/pkg/export"
)

// BuildExporters makes the configured exporters, named by kind ("otlp",
// then "otlp-2" for a second one). Nothing is left open on error.
func BuildExporters(ctx context.Context, cfgs []ExporterConfig, stdout io.Writer) (_ map[string]export.Exporter, err error) {
	out := map[string]export.Exporter{}
	defer func() {
		if err != nil {
			for _, e := range out {
				e.Shutdown(ctx)
			}
		}
	}()
	seen := map[string]int{}
	for i, c := range cfgs {
		kind, e, err := buildExporter(ctx, c, stdout)
		if err != nil {
			return nil, &ConfigError{Key: fmt.Sprintf("exporters[%d].%s", i, kind), Msg: err.Error()}
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

func buildExporter(ctx context.Context, c ExporterConfig, stdout io.Writer) (string, export.Exporter, error) {
	switch {
	case c.Terminal != nil:
		w, closer, err := output(c.Terminal.Path, stdout)
		if err != nil {
			return "terminal", nil, err
		}
		return "terminal", withCloser(export.NewTextExporter(w, c.Terminal.Stacks), closer), nil
	case c.JSON != nil:
		w, closer, err := output(c.JSON.Path, stdout)
		if err != nil {
			return "json", nil, err
		}
		return "json", withCloser(export.NewJSONExporter(w), closer), nil
	case c.ClickHouse != nil:
		ch := c.ClickHouse
		pw, err := export.ClickHousePassword(ch.PasswordFile)
		if err != nil {
			return "clickhouse", nil, err
		}
		e, err := export.NewClickHouseExporter(export.ClickHouseConfig{
			Addrs:       ch.Addrs,
			Username:    ch.Username,
			Password:    pw,
			Compression: ch.Compression,
			Schema:      export.TracesSchema{Database: ch.Database, Table: ch.Table, TTL: ch.TTL},
			DialTimeout: ch.DialTimeout,
			Retries:     ch.Retries,
		})
		return "clickhouse", e, err
	case c.OTLP != nil:
		o := c.OTLP
		e, err := export.NewOTLPExporter(ctx, export.OTLPConfig{
			HTTP:     o.Protocol == "http",
			Endpoint: o.Endpoint,
			URLPath:  o.URLPath,
			Insecure: o.Insecure,
			Headers:  o.Headers,
			Timeout:  o.Timeout,
		})
		return "otlp", e, err
	}
	return "", nil, errors.New("no exporter set")
}

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

// closingExporter closes its output file on Shutdown.
type closingExporter struct {
	export.Exporter
	c io.Closer
}

func withCloser(e export.Exporter, c io.Closer) export.Exporter {
	if c == nil {
		return e
	}
	return closingExporter{e, c}
}

func (e closingExporter) Shutdown(ctx context.Context) error {
	return errors.Join(e.Exporter.Shutdown(ctx), e.c.Close())
}
