package export

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/chtest"
	"github.com/cilium-tracer/tracer/pkg/calls"
)

// TestClickHouseOutage keeps ClickHouse away for -outage under a steady
// load: the pipeline's memory must stay within its bound, the losses must be
// counted, and export must resume by itself when the server is back.
func TestClickHouseOutage(t *testing.T) {
	for _, mode := range []string{"refused", "blackholed"} {
		t.Run(mode, func(t *testing.T) {
			srv := chtest.New(t, 25, 8)
			e, err := NewClickHouseExporter(ClickHouseConfig{
				Addrs:       []string{srv.Addr()},
				DialTimeout: 200 * time.Millisecond,
				ReadTimeout: time.Second,
				Retries:     3,
				MinBackoff:  20 * time.Millisecond,
				MaxBackoff:  200 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			p := NewPipeline(NewSpanBuilder(testResource), map[string]Exporter{"clickhouse": e}, PipelineConfig{
				QueueSize:     512,
				BatchSize:     128,
				BatchTimeout:  50 * time.Millisecond,
				ExportTimeout: 2 * time.Second,
			})

			// Steady load: 4000 calls/s.
			var id atomic.Uint64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(5 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					for range 20 {
						n := id.Add(1)
						p.Enqueue(calls.Call{Func: fnRegenerateBPF, ID: n, RootID: n, Start: time.Now(), Duration: time.Millisecond})
					}
				}
			}()

			var maxPending atomic.Int64
			var maxHeap atomic.Uint64
			watchDone := make(chan struct{})
			go func() {
				defer close(watchDone)
				var ms runtime.MemStats
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
					if pend := int64(p.Stats().Pending); pend > maxPending.Load() {
						maxPending.Store(pend)
					}
					if i%20 == 0 {
						runtime.ReadMemStats(&ms)
						if ms.HeapInuse > maxHeap.Load() {
							maxHeap.Store(ms.HeapInuse)
						}
					}
				}
			}()

			waitFor(t, func() bool { return srv.RowCount() > 1000 })
			before := p.Stats().Exporters["clickhouse"]

			switch mode {
			case "refused":
				srv.Stop()
			case "blackholed":
				srv.SetBlackhole(true)
			}
			time.Sleep(*outage)
			during := p.Stats().Exporters["clickhouse"]
			rowsDown := srv.RowCount()
			switch mode {
			case "refused":
				srv.Start()
			case "blackholed":
				srv.SetBlackhole(false)
			}

			// Export resumes by itself.
			waitFor(t, func() bool { return srv.RowCount() > rowsDown+1000 })
			close(stop)
			wg.Wait()
			<-watchDone
			if err := p.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}

			st := p.Stats()
			ch := st.Exporters["clickhouse"]
			t.Logf("outage %v: before %+v, at end of outage %+v, final %+v, pipeline received %d dropped %d",
				*outage, before, during, ch, st.Received, st.Dropped)
			t.Logf("max pending %d (bound %d), max heap in use %d MiB, rows at server %d",
				maxPending.Load(), p.MaxPending(), maxHeap.Load()>>20, srv.RowCount())

			if got := maxPending.Load(); got > int64(p.MaxPending()) {
				t.Errorf("held %d calls, more than the bound %d", got, p.MaxPending())
			}
			if lost := during.Dropped + during.Failed - before.Dropped - before.Failed; lost == 0 {
				t.Errorf("nothing counted as lost during the outage: %+v", during)
			}
			accepted := st.Received - st.Dropped
			if ch.Queued+ch.Dropped != accepted || ch.Exported+ch.Failed != ch.Queued {
				t.Errorf("spans unaccounted for: %+v, %d accepted", ch, accepted)
			}
			// Every span counted as exported reached the server; a batch cut
			// off mid-insert may have reached it without being counted.
			if rows := uint64(srv.RowCount()); rows < ch.Exported {
				t.Errorf("server has %d rows, exporter counted %d exported", rows, ch.Exported)
			}
			if ch.Exported <= during.Exported {
				t.Errorf("no export after the outage: %+v then %+v", during, ch)
			}
		})
	}
}
