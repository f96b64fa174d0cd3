package export

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
)

// An Exporter writes batches of spans somewhere. Export is never called
// concurrently by a Pipeline; it must not modify the spans or keep the slice
// after returning. Retries belong inside Export. Export after Shutdown
// returns ErrShutdown.
type Exporter interface {
	Export(ctx context.Context, spans []Span) error
	Shutdown(ctx context.Context) error
}

// ErrShutdown is returned by exporters used after Shutdown.
var ErrShutdown = errors.New("exporter is shut down")

// PipelineConfig configures a Pipeline. Zero fields take the defaults.
type PipelineConfig struct {
	// QueueSize bounds the calls waiting to be turned into spans, and, per
	// exporter, the spans waiting to be exported, however small their
	// batches. Default 8192.
	QueueSize int
	// BatchSize is the largest batch handed to an exporter. Default 512.
	BatchSize int
	// BatchTimeout is the longest a span waits for its batch to fill.
	// Default 1s.
	BatchTimeout time.Duration
	// ExportTimeout bounds one Export call, the exporter's own retries
	// included. Default 30s. A batch whose export fails is exported again
	// after a backoff, up to MaxRetryBackoff, while newer batches queue
	// behind it: a batch is lost only when the queue is full, or when its
	// export fails once Shutdown has begun.
	ExportTimeout time.Duration
	// OnError, if set, is told about every failed export. It runs on the
	// exporter's goroutine.
	OnError func(exporter string, err error)
}

func (c PipelineConfig) withDefaults() PipelineConfig {
	if c.QueueSize <= 0 {
		c.QueueSize = 8192
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 512
	}
	if c.BatchSize > c.QueueSize {
		c.BatchSize = c.QueueSize
	}
	if c.BatchTimeout <= 0 {
		c.BatchTimeout = time.Second
	}
	if c.ExportTimeout <= 0 {
		c.ExportTimeout = 30 * time.Second
	}
	return c
}

// Stats are a pipeline's counters since it started.
type Stats struct {
	Received uint64 // calls offered to Enqueue
	Dropped  uint64 // calls refused by Enqueue: queue full or pipeline shut down
	Pending  int    // calls and spans held in memory now, across all queues

	Exporters map[string]ExporterStats
}

// ExporterStats are one exporter's counters, in spans.
type ExporterStats struct {
	Queued   uint64 // handed to the exporter's queue
	Exported uint64 // exported successfully
	Dropped  uint64 // dropped because the exporter's queue was full
	Failed   uint64 // lost to failed exports: given up at shutdown
	Retried  uint64 // exports of a batch tried again after a failure
}

// A Pipeline moves calls from the event reader to several exporters. Enqueue
// never blocks: a full queue drops the call and counts it. A slow or broken
// exporter fills only its own queue; the others keep exporting.
//
// Memory is bounded: a pipeline holds at most MaxPending calls and spans.
type Pipeline struct {
	cfg     PipelineConfig
	builder *SpanBuilder

	mu     sync.RWMutex // guards closed against concurrent Enqueue
	closed bool
	in     chan calls.Call

	received, dropped atomic.Uint64
	batchLen          atomic.Int64

	sinks []*sink

	ctx      context.Context // canceled when Shutdown gives up waiting
	cancel   context.CancelFunc
	stop     chan struct{}
	done     sync.WaitGroup
	shutdown sync.Once
	err      error // Shutdown's result
}

type sink struct {
	name string
	exp  Exporter
	q    spanQueue
	done chan struct{} // closed when the exporting goroutine returns

	pending                                    atomic.Int64
	queued, exported, dropped, failed, retried atomic.Uint64
}

// A spanQueue holds an exporter's batches, at most max spans in all: a
// bound in spans, so that small batches, sent by the batch timeout on a
// quiet node, queue as many spans as large ones.
type spanQueue struct {
	mu      sync.Mutex
	batches [][]Span
	spans   int
	max     int
	closed  bool
	ready   chan struct{} // has a value while batches is not empty or closed
}

func newSpanQueue(max int) spanQueue { return spanQueue{max: max, ready: make(chan struct{}, 1)} }

// push appends batch, unless that would pass the bound.
func (q *spanQueue) push(batch []Span) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.spans+len(batch) > q.max {
		return false
	}
	q.batches = append(q.batches, batch)
	q.spans += len(batch)
	q.signal()
	return true
}

// close lets pop return false once the queue is empty.
func (q *spanQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.signal()
}

func (q *spanQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// peek waits for the oldest batch and returns it without removing it:
// while it is retried, it counts against the bound. False once closed and
// empty.
func (q *spanQueue) peek() ([]Span, bool) {
	for {
		q.mu.Lock()
		if len(q.batches) > 0 {
			b := q.batches[0]
			q.mu.Unlock()
			return b, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, false
		}
		<-q.ready
	}
}

// drop removes the oldest batch.
func (q *spanQueue) drop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.spans -= len(q.batches[0])
	q.batches[0] = nil
	q.batches = q.batches[1:]
	if len(q.batches) > 0 || q.closed {
		q.signal()
	}
}

// NewPipeline starts a pipeline that builds spans with b and hands them to
// every exporter, named for Stats and errors.
func NewPipeline(b *SpanBuilder, exporters map[string]Exporter, cfg PipelineConfig) *Pipeline {
	cfg = cfg.withDefaults()
	p := &Pipeline{
		cfg:     cfg,
		builder: b,
		in:      make(chan calls.Call, cfg.QueueSize),
		stop:    make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for name, e := range exporters {
		s := &sink{name: name, exp: e, q: newSpanQueue(cfg.QueueSize), done: make(chan struct{})}
		p.sinks = append(p.sinks, s)
		p.done.Add(1)
		go p.export(s)
	}
	p.done.Add(1)
	go p.dispatch()
	return p
}

// MaxPending is the most calls and spans the pipeline ever holds: the input
// queue, the batch being filled, and per exporter its queue, the batch
// being exported among them.
func (p *Pipeline) MaxPending() int {
	return p.cfg.QueueSize + p.cfg.BatchSize + len(p.sinks)*p.cfg.QueueSize
}

// Enqueue offers c for export and reports whether it was accepted. It never
// blocks.
func (p *Pipeline) Enqueue(c calls.Call) bool {
	p.received.Add(1)
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.closed {
		select {
		case p.in <- c:
			return true
		default:
		}
	}
	p.dropped.Add(1)
	return false
}

// Stats returns the pipeline's counters.
func (p *Pipeline) Stats() Stats {
	st := Stats{
		Received:  p.received.Load(),
		Dropped:   p.dropped.Load(),
		Pending:   len(p.in) + int(p.batchLen.Load()),
		Exporters: make(map[string]ExporterStats, len(p.sinks)),
	}
	for _, s := range p.sinks {
		st.Pending += int(s.pending.Load())
		st.Exporters[s.name] = ExporterStats{
			Queued:   s.queued.Load(),
			Exported: s.exported.Load(),
			Dropped:  s.dropped.Load(),
			Failed:   s.failed.Load(),
			Retried:  s.retried.Load(),
		}
	}
	return st
}

func (p *Pipeline) dispatch() {
	defer p.done.Done()
	defer func() {
		for _, s := range p.sinks {
			s.q.close()
		}
	}()

	// Armed by a batch's first span only: an idle daemon does not wake
	// for an empty batch.
	timer := time.NewTimer(p.cfg.BatchTimeout)
	timer.Stop()
	defer timer.Stop()
	batch := make([]Span, 0, p.cfg.BatchSize)
	add := func(c calls.Call) {
		if len(batch) == 0 {
			timer.Reset(p.cfg.BatchTimeout)
		}
		batch = append(batch, p.builder.Build(c))
		p.batchLen.Store(int64(len(batch)))
		if len(batch) == p.cfg.BatchSize {
			timer.Stop()
			p.flush(batch)
			batch = make([]Span, 0, p.cfg.BatchSize)
		}
	}
	for {
		select {
		case c := <-p.in:
			add(c)
		case <-timer.C:
			if len(batch) > 0 {
				p.flush(batch)
				batch = make([]Span, 0, p.cfg.BatchSize)
			}
		case <-p.stop:
			// Enqueue refuses new calls once closed is set, so this drains
			// everything that was accepted.
			for {
				select {
				case c := <-p.in:
					add(c)
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				p.flush(batch)
			}
			return
		}
	}
}

// flush hands batch to every exporter whose queue has room. The exporters
// share the slice read-only.
func (p *Pipeline) flush(batch []Span) {
	n := uint64(len(batch))
	for _, s := range p.sinks {
		s.pending.Add(int64(n))
		if s.q.push(batch) {
			s.queued.Add(n)
		} else {
			s.pending.Add(-int64(n))
			s.dropped.Add(n)
		}
	}
	p.batchLen.Store(0)
}

// The backoff between exports of a batch that failed: doubling from
// minRetryBackoff, capped at MaxRetryBackoff.
const (
	minRetryBackoff = time.Second
	MaxRetryBackoff = 30 * time.Second
)

// stopping reports whether Shutdown has begun.
func (p *Pipeline) stopping() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

func (p *Pipeline) export(s *sink) {
	defer p.done.Done()
	defer close(s.done)
	for {
		batch, ok := s.q.peek()
		if !ok {
			return
		}
		n := uint64(len(batch))
		for backoff, failures := minRetryBackoff, 0; ; failures++ {
			ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ExportTimeout)
			err := s.exp.Export(ctx, batch)
			cancel()
			if err == nil {
				s.exported.Add(n)
				break
			}
			// Told once per batch: a long outage does not log every
			// retry.
			if p.cfg.OnError != nil && failures == 0 {
				p.cfg.OnError(s.name, err)
			}
			// Once Shutdown has begun, each batch is tried once: it
			// waits for what it can export, not for an outage to end.
			if p.ctx.Err() != nil || p.stopping() {
				s.failed.Add(n)
				break
			}
			s.retried.Add(1)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-p.stop:
			case <-p.ctx.Done():
			}
			t.Stop()
			backoff = min(2*backoff, MaxRetryBackoff)
		}
		s.q.drop()
		s.pending.Add(-int64(n))
	}
}

// shutdownGrace is how long Shutdown waits, once its context has ended, for
// canceled exports to return, and how long exporters then get to shut down.
const shutdownGrace = time.Second

// Shutdown stops accepting calls, exports everything already accepted, and
// shuts the exporters down. If ctx ends first, exports in flight are
// canceled, exporters still busy after a short grace are abandoned without
// being shut down, and ctx's error is returned. Only the first call does
// the work; later calls return its result.
func (p *Pipeline) Shutdown(ctx context.Context) error {
	p.shutdown.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		close(p.stop)

		drained := make(chan struct{})
		go func() {
			p.done.Wait()
			close(drained)
		}()
		var errs []error
		select {
		case <-drained:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("shutdown: %w", ctx.Err()))
			p.cancel()
			t := time.NewTimer(shutdownGrace)
			select {
			case <-drained:
			case <-t.C:
			}
			t.Stop()
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
			defer cancel()
		}
		p.cancel()

		for _, s := range p.sinks {
			select {
			case <-s.done:
			default:
				errs = append(errs, fmt.Errorf("shutdown %s: abandoned while exporting", s.name))
				continue
			}
			if err := s.exp.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("shutdown %s: %w", s.name, err))
			}
		}
		p.err = errors.Join(errs...)
	})
	return p.err
}
