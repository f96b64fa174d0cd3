package capacity

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// docs/capacity.md shows what the model computes from the measured inputs.
func TestDocMatchesModel(t *testing.T) {
	doc, err := os.ReadFile("../../docs/capacity.md")
	if err != nil {
		t.Fatal(err)
	}
	want := Markdown(Measured, Published, Sizes...)
	if !strings.Contains(string(doc), want) {
		t.Errorf("docs/capacity.md does not hold the model's output; regenerate it with go run ./internal/capacity/report:\n%s", want)
	}
}

func TestModel(t *testing.T) {
	n := Node{Rate: 100, Limit: 400, WireBytes: 200, RawBytes: 1000, BatchSize: 512, BatchTimeout: time.Second, StartJitter: 10 * time.Second}
	f := Model(n, Published, 1000)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("spans", f.Spans, 100_000)
	near("peak spans", f.PeakSpans, 400_000)
	near("wire MB", f.WireMB, 20)
	near("raw MB at the limit", f.PeakRawMB, 400)
	// The timer runs from a batch's first span: 1 + 100 more in a second.
	near("rows per insert", f.RowsPerInsert, 101)
	near("inserts", f.Inserts, 100_000.0/101)
	near("reconnects", f.Reconnects, 100)
	// 100 MB/s raw: 10 vCPUs of ingest and 10 of queries, one server by
	// CPU, and 100,000 rows/s over 231,481 per server one too; at the
	// limit 80 vCPUs take three 32-vCPU servers.
	near("vCPUs", f.VCPUs, 20)
	if f.Shards != 1 || f.Servers != 2 || f.PeakShards != 3 {
		t.Errorf("shards %d servers %d peak shards %d, want 1, 2, 3", f.Shards, f.Servers, f.PeakShards)
	}
	near("async parts per shard", f.AsyncPartsPerShard, 5)

	// A full batch before the timeout.
	if got := (Node{BatchSize: 512, BatchTimeout: time.Second}).RowsPerInsert(10_000); got != 512 {
		t.Errorf("rows per insert at 10,000/s: %v, want 512", got)
	}
}
