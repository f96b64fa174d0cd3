package capacity

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Node is what one daemon sends, measured (see docs/capacity.md).
type Node struct {
	// Rate is the spans per second one daemon exports at its default
	// settings tracing the example agent at its defaults.
	Rate float64
	// Limit is the most spans per second the governor lets one daemon
	// export: every span is a traced call, and the traced calls' cost
	// (entry and RET traps) is kept under the budget, so Limit is
	// budget / cost of a traced call.
	Limit float64
	// WireBytes is the bytes per span on the wire (LZ4-compressed native
	// blocks, queries and framing), RawBytes per span uncompressed.
	WireBytes, RawBytes float64
	// BatchSize and BatchTimeout are the pipeline's: a batch is sent when
	// full or BatchTimeout after its first span.
	BatchSize    int
	BatchTimeout time.Duration
	// StartJitter is the window a restarted daemon's first attach, and so
	// its first ClickHouse connection, is spread over (jitter.start).
	StartJitter time.Duration
}

// ClickHouse is the published guidance the sizing rests on (sources in
// docs/capacity.md).
type ClickHouse struct {
	// RawMBPerVCPU is the uncompressed ingest one vCPU absorbs, and as
	// much again for queries: ClickStack's "1 vCPU per 10 MB/s" for each.
	RawMBPerVCPU float64
	// Compression is the storage compression ratio ClickStack assumes.
	Compression float64
	// RowsPerNode is the rows per second one 32-core server ingests, from
	// the collector exporter's performance guide (20 billion a day).
	RowsPerNode float64
	// VCPUsPerNode is the server size the sizing counts in.
	VCPUsPerNode int
	// Replicas per shard.
	Replicas int
	// InsertsPerSecond is the synchronous INSERT rate ClickHouse advises
	// per table and server ("around one insert query per second").
	InsertsPerSecond float64
	// AsyncFlush is async_insert_busy_timeout_ms's default: with async
	// inserts a server writes at most one part per table this often.
	AsyncFlush time.Duration
}

// Fleet is the model's output for one fleet size.
type Fleet struct {
	Nodes int
	// Spans per second at ClickHouse: at the measured rate, and with every
	// node at its limit.
	Spans, PeakSpans float64
	// MB per second on the wire (compressed) and raw, at the measured rate
	// and at the limit.
	WireMB, PeakWireMB, RawMB, PeakRawMB float64
	// RowsPerInsert and Inserts (per second) are the daemons' INSERTs at
	// the measured rate.
	RowsPerInsert, Inserts float64
	// Reconnects is the mean connection rate after a fleet-wide restart,
	// spread over the start jitter window.
	Reconnects float64
	// VCPUs is the compute per replica, Shards and Servers the cluster
	// that provides it, and StorageGBDay its compressed growth per
	// replica, for the measured rate; PeakShards is the shards for every
	// node at its limit.
	VCPUs        float64
	Shards       int
	Servers      int
	StorageGBDay float64
	PeakShards   int
	// SyncPartsPerShard is the parts per second each shard writes without
	// async inserts (each INSERT into the Distributed table sends a block
	// to every shard); AsyncPartsPerShard with them.
	SyncPartsPerShard, AsyncPartsPerShard float64
}

// RowsPerInsert is how many spans a daemon's batch holds at rate: the
// span that arms the timer and those arriving before it fires, at most a
// full batch.
func (n Node) RowsPerInsert(rate float64) float64 {
	return math.Min(float64(n.BatchSize), 1+rate*n.BatchTimeout.Seconds())
}

// Model computes the fleet of size nodes.
func Model(n Node, ch ClickHouse, nodes int) Fleet {
	N := float64(nodes)
	f := Fleet{
		Nodes:      nodes,
		Spans:      N * n.Rate,
		PeakSpans:  N * n.Limit,
		Reconnects: N / n.StartJitter.Seconds(),
	}
	f.WireMB, f.PeakWireMB = f.Spans*n.WireBytes/1e6, f.PeakSpans*n.WireBytes/1e6
	f.RawMB, f.PeakRawMB = f.Spans*n.RawBytes/1e6, f.PeakSpans*n.RawBytes/1e6
	f.RowsPerInsert = n.RowsPerInsert(n.Rate)
	f.Inserts = f.Spans / f.RowsPerInsert

	f.VCPUs = ch.vcpus(f.RawMB)
	f.Shards = ch.shards(f.RawMB, f.Spans)
	f.PeakShards = ch.shards(f.PeakRawMB, f.PeakSpans)
	f.Servers = f.Shards * ch.Replicas
	f.StorageGBDay = f.RawMB * 86400 / ch.Compression / 1e3
	f.SyncPartsPerShard = f.Inserts
	f.AsyncPartsPerShard = math.Min(f.Inserts/float64(f.Shards), 1/ch.AsyncFlush.Seconds())
	return f
}

// GroupNodes is how many daemons, each sending its batches at its
// measured rate, make up ClickHouse's advised synchronous INSERTs per
// second between them.
func GroupNodes(n Node, ch ClickHouse) float64 {
	return ch.InsertsPerSecond * n.RowsPerInsert(n.Rate) / n.Rate
}

// vcpus is the compute per replica for rawMB of ingest per second: as
// much for queries as for ingest.
func (ch ClickHouse) vcpus(rawMB float64) float64 { return 2 * rawMB / ch.RawMBPerVCPU }

// shards is how many servers the compute and the row rate each need, the
// larger.
func (ch ClickHouse) shards(rawMB, rows float64) int {
	byCPU := math.Ceil(ch.vcpus(rawMB) / float64(ch.VCPUsPerNode))
	return int(max(byCPU, math.Ceil(rows/ch.RowsPerNode), 1))
}

// Markdown renders the model for each fleet size as the tables of
// docs/capacity.md.
func Markdown(n Node, ch ClickHouse, sizes ...int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Inputs: %.1f spans/s per node measured, %.0f spans/s limit, %.0f B/span on the wire (%.0f B raw), batches of up to %d spans or %v, start jitter %v.\n",
		n.Rate, n.Limit, n.WireBytes, n.RawBytes, n.BatchSize, n.BatchTimeout, n.StartJitter)
	fmt.Fprintf(&b, "Each daemon sends %.2f INSERTs/s; ClickHouse's ~%g synchronous INSERT/s holds a node group of %.1f daemons.\n\n",
		n.Rate/n.RowsPerInsert(n.Rate), ch.InsertsPerSecond, GroupNodes(n, ch))
	b.WriteString("| nodes | spans/s (measured rate) | spans/s (every node at its limit) | wire MB/s | wire MB/s at limit | raw MB/s at limit | INSERTs/s | rows/INSERT | reconnects/s after a fleet restart |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	fleets := make([]Fleet, len(sizes))
	for i, size := range sizes {
		f := Model(n, ch, size)
		fleets[i] = f
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %.2f | %.1f | %s | %.0f | %.1f |\n",
			thousands(f.Nodes), thousands(int(math.Round(f.Spans))), thousands(int(math.Round(f.PeakSpans))),
			f.WireMB, f.PeakWireMB, f.PeakRawMB, thousands(int(math.Round(f.Inserts))), f.RowsPerInsert, f.Reconnects)
	}
	fmt.Fprintf(&b, "\nCluster for the measured rate (%d-vCPU servers, %d replicas per shard):\n\n", ch.VCPUsPerNode, ch.Replicas)
	b.WriteString("| nodes | vCPUs per replica (ingest + query) | shards | servers | storage GB/day per replica | shards with every node at its limit | parts/s per shard, sync INSERTs | parts/s per shard, async inserts |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, f := range fleets {
		fmt.Fprintf(&b, "| %s | %.1f | %d | %d | %.0f | %d | %s | %.1f |\n",
			thousands(f.Nodes), f.VCPUs, f.Shards, f.Servers, f.StorageGBDay, f.PeakShards,
			thousands(int(math.Round(f.SyncPartsPerShard))), f.AsyncPartsPerShard)
	}
	return b.String()
}

func thousands(v int) string {
	s := fmt.Sprint(v)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// Published is ClickHouse's published guidance, as docs/capacity.md cites
// it.
var Published = ClickHouse{
	RawMBPerVCPU:     10,
	Compression:      10,
	RowsPerNode:      20e9 / 86400,
	VCPUsPerNode:     32,
	Replicas:         2,
	InsertsPerSecond: 1,
	AsyncFlush:       200 * time.Millisecond,
}

// Sizes are the fleets docs/capacity.md sizes.
var Sizes = []int{1000, 10000, 50000}

// Measured are the per-node inputs measured here (docs/capacity.md says
// how).
var Measured = Node{
	Rate:         4212.0 / 180,
	Limit:        0.01 / 28.6e-6,
	WireBytes:    268,
	RawBytes:     1436,
	BatchSize:    512,
	BatchTimeout: time.Second,
	StartJitter:  20 * time.Minute,
}
