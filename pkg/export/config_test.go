package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// NewExporters builds what the daemon's file and trace's flags describe:
// names by kind, files written and closed on Shutdown.
func TestNewExporters(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	var stdout bytes.Buffer
	before := openFiles(t)
	exps, err := NewExporters(ctx, []ExporterConfig{
		{JSON: &JSONExporterConfig{Path: a}},
		{Terminal: &TerminalExporterConfig{}},
		{JSON: &JSONExporterConfig{Path: b}},
	}, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range exps {
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{"json", "json-2", "terminal"}; !slices.Equal(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
	spans := testSpans()
	for _, e := range exps {
		if err := e.Export(ctx, spans); err != nil {
			t.Fatal(err)
		}
		if err := e.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, path := range []string{a, b} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) != len(spans) {
			t.Errorf("%s: %d lines, want %d", path, len(lines), len(spans))
		}
		var js JSONSpan
		if err := json.Unmarshal([]byte(lines[0]), &js); err != nil || js.SpanID != spans[0].SpanID.String() {
			t.Errorf("%s: first line %q (%v)", path, lines[0], err)
		}
	}
	if n := strings.Count(stdout.String(), "\n"); n != len(spans) {
		t.Errorf("stdout: %d lines, want %d", n, len(spans))
	}
	if n := openFiles(t); n != before {
		t.Errorf("%d files open after Shutdown, %d before NewExporters", n, before)
	}
}

func openFiles(t *testing.T) int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// Problems name the item and key, as the daemon's file spells them, and
// nothing is built when one item is bad.
func TestNewExportersErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := NewExporters(context.Background(), []ExporterConfig{
		{JSON: &JSONExporterConfig{Path: filepath.Join(dir, "ok.json")}},
		{},
		{OTLP: &OTLPExporterConfig{Protocol: "carrier-pigeon"}},
		{JSON: &JSONExporterConfig{}, Terminal: &TerminalExporterConfig{}},
	}, &bytes.Buffer{})
	want := []string{
		"exporters[1]: empty: want one of terminal, json, clickhouse or otlp",
		`exporters[2].otlp.protocol: unknown protocol "carrier-pigeon": want grpc or http`,
		"exporters[3]: one exporter per list item",
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Fatalf("got\n%v\nwant\n%s", err, strings.Join(want, "\n"))
	}
	if _, err := os.Stat(filepath.Join(dir, "ok.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a valid item was opened beside invalid ones: %v", err)
	}

	_, err = NewExporters(context.Background(), []ExporterConfig{
		{ClickHouse: &ClickHouseExporterConfig{PasswordFile: filepath.Join(dir, "missing")}},
	}, &bytes.Buffer{})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Path() != "exporters[0].clickhouse" || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unreadable password file: %v", err)
	}
}
