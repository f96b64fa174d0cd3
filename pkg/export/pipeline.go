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
	// exporter, the spans waiting to be exported. Default 8192.
	QueueSize int
	// BatchSize is the largest batch handed to an exporter. Default 512.
	BatchSize int
	// BatchTimeout is the longest a span waits for its batch to fill.
	// Default 1s.
	BatchTimeout time.Duration
	// ExportTimeout bounds one Export call, retries included. Default 30s.
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
	Failed   uint64 // lost because Export returned an error
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
	ch   chan []Span
	done chan struct{} // closed when the exporting goroutine returns

	pending                           atomic.Int64
	queued, exported, dropped, failed atomic.Uint64
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
	batches := (cfg.QueueSize + cfg.BatchSize - 1) / cfg.BatchSize
	for name, e := range exporters {
		s := &sink{name: name, exp: e, ch: make(chan []Span, batches), done: make(chan struct{})}
		p.sinks = append(p.sinks, s)
		p.done.Add(1)
		go p.export(s)
	}
	p.done.Add(1)
	go p.dispatch()
	return p
}

// MaxPending is the most calls and spans the pipeline ever holds: the input
// queue, the batch being filled, and per exporter its queue and the batch
// being exported.
func (p *Pipeline) MaxPending() int {
	batches := (p.cfg.QueueSize + p.cfg.BatchSize - 1) / p.cfg.BatchSize
	perSink := batches*p.cfg.BatchSize + p.cfg.BatchSize
	return p.cfg.QueueSize + p.cfg.BatchSize + len(p.sinks)*perSink
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
		}
	}
	return st
}

func (p *Pipeline) dispatch() {
	defer p.done.Done()
	defer func() {
		for _, s := range p.sinks {
			close(s.ch)
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
		select {
		case s.ch <- batch:
			s.queued.Add(n)
		default:
			s.pending.Add(-int64(n))
			s.dropped.Add(n)
		}
	}
	p.batchLen.Store(0)
}

func (p *Pipeline) export(s *sink) {
	defer p.done.Done()
	defer close(s.done)
	for batch := range s.ch {
		n := uint64(len(batch))
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ExportTimeout)
		err := s.exp.Export(ctx, batch)
		cancel()
		if err != nil {
			s.failed.Add(n)
			if p.cfg.OnError != nil {
				p.cfg.OnError(s.name, err)
			}
		} else {
			s.exported.Add(n)
		}
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
