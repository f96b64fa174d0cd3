package probe

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/cilium-tracer/tracer/bpf/uprobes"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// MaxProbes is how many functions one Set can trace.
const MaxProbes = 1024

// MaxNesting is how many traced calls one goroutine can have in flight; a
// call deeper than that is counted untracked.
const MaxNesting = len(uprobes.UprobesGstate{}.Frames)

// A Probe is one function to trace. Its index in the slice given to Attach
// is its probe ID in records and counters.
type Probe struct {
	Func symbols.Func
	// Returns are the file offsets of every RET of the function; unused
	// for EntryOnly probes.
	Returns []uint64
	// Captures are read at each entry and reported with the call's
	// record, in this order.
	Captures []symbols.Capture
	Config
}

// Config is what the BPF programs filter on, per probe. It can be changed
// while attached.
type Config struct {
	// MinDuration drops completed calls shorter than this in BPF.
	MinDuration time.Duration
	// SampleEvery traces one call in SampleEvery, chosen at random at
	// entry; 0 and 1 trace every call. Unsampled calls still cost the
	// uprobe trap.
	SampleEvery uint32
	// EntryOnly attaches no RET probes and counts entries per stack
	// instead of pairing calls: the cheapest mode for hot functions.
	EntryOnly bool
}

// Options configure a Set.
type Options struct {
	// Binary is the path the kernel attaches to: /proc/PID/exe or
	// /proc/PID/root/<path>, so the probes hit the file the target runs.
	Binary string
	// PID restricts the probes to one process; 0 probes every process
	// running Binary.
	PID int
	// GoidOffset is the offset of runtime.g.goid in the target; 0 reports
	// g addresses as goroutine IDs.
	GoidOffset uint64
	// Stacks captures the user stack at each entry.
	Stacks bool
	// Panics are the file offsets of runtime.gopanic and runtime.Goexit.
	// Probing them lets a call after a recovered panic be told apart from
	// a re-entry after stack growth; without them such a call is mistaken
	// for a re-entry of the call the panic ended.
	Panics []uint64
}

// A Set is a group of probes attached to one executable.
type Set struct {
	objs   uprobes.UprobesObjects
	exe    *link.Executable
	opts   Options
	probes []Probe
	links  [][]link.Link // per probe: entry first, then the RETs
	gens   []uint32      // per probe: how often it was attached again
	panics []link.Link
	reader *ringbuf.Reader
	// multi attaches through uprobe_multi links (Linux 6.6+): one link per
	// function's RETs instead of one perf event each, and, on kernels with
	// the CVE-2025-38466 fix, no CAP_SYS_ADMIN needed.
	multi bool
}

// Attach loads the BPF programs and attaches them at the entry and every RET
// of each probe. On error nothing stays attached.
func Attach(probes []Probe, opts Options) (_ *Set, err error) {
	if len(probes) == 0 {
		return nil, errors.New("no functions to probe")
	}
	if len(probes) > MaxProbes {
		return nil, fmt.Errorf("%d functions to probe, at most %d", len(probes), MaxProbes)
	}
	for _, p := range probes {
		if err := checkCaptures(p, runtime.GOARCH); err != nil {
			return nil, err
		}
	}
	// Kernels >= 5.11 account BPF memory to the cgroup; where the limit
	// cannot be raised (no CAP_SYS_RESOURCE) loading may still work.
	_ = rlimit.RemoveMemlock()

	spec, err := uprobes.LoadUprobes()
	if err != nil {
		return nil, fmt.Errorf("load BPF spec: %w", err)
	}
	if err := spec.Variables["goid_offset"].Set(opts.GoidOffset); err != nil {
		return nil, fmt.Errorf("set goid_offset: %w", err)
	}
	if err := spec.Variables["capture_stacks"].Set(boolU32(opts.Stacks)); err != nil {
		return nil, fmt.Errorf("set capture_stacks: %w", err)
	}

	s := &Set{opts: opts, probes: probes, links: make([][]link.Link, len(probes)), gens: make([]uint32, len(probes))}
	if features.HaveBPFLinkUprobeMulti() == nil {
		s.multi = true
		for _, p := range spec.Programs {
			p.AttachType = ebpf.AttachTraceUprobeMulti
		}
	}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		if errors.Is(err, os.ErrPermission) || errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("load BPF programs (needs root or CAP_BPF+CAP_PERFMON): %w", err)
		}
		return nil, fmt.Errorf("load BPF programs: %w", err)
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	for id, p := range probes {
		if err := s.SetConfig(id, p.Config); err != nil {
			return nil, err
		}
	}

	s.exe, err = link.OpenExecutable(opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", opts.Binary, err)
	}
	// Panic probes first: a call must not start unseen by them.
	if len(opts.Panics) > 0 {
		s.panics, err = s.uprobes("runtime.gopanic", s.objs.GoPanic, opts.Panics, 0)
		if err != nil {
			return nil, fmt.Errorf("attach panic probes: %w", err)
		}
	}
	for id := range probes {
		if err := s.attach(id); err != nil {
			return nil, err
		}
	}

	s.reader, err = ringbuf.NewReader(s.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return s, nil
}

// attach attaches the RET probes of probe id before its entry probe, so no
// call is entered that could not be seen returning.
func (s *Set) attach(id int) error {
	p := s.probes[id]
	var rets []link.Link
	if !p.EntryOnly {
		if len(p.Returns) == 0 {
			return fmt.Errorf("%s: no RET instructions to probe", p.Func.Name)
		}
		var err error
		if rets, err = s.uprobes(p.Func.Name, s.objs.GoReturn, p.Returns, uint64(id)); err != nil {
			return fmt.Errorf("attach %s RETs: %w", p.Func.Name, err)
		}
	}
	entry, err := s.uprobes(p.Func.Name, s.objs.GoEntry, []uint64{p.Func.Offset}, uint64(id))
	if err != nil {
		closeAll(rets)
		return fmt.Errorf("attach %s entry: %w", p.Func.Name, err)
	}
	s.links[id] = append(entry, rets...)
	return nil
}

// uprobes attaches prog at each file offset, with cookie: one uprobe_multi
// link for all of them where the kernel has it, else one uprobe each.
func (s *Set) uprobes(name string, prog *ebpf.Program, offs []uint64, cookie uint64) ([]link.Link, error) {
	if s.multi {
		cookies := make([]uint64, len(offs))
		for i := range cookies {
			cookies[i] = cookie
		}
		l, err := s.exe.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: offs, Cookies: cookies, PID: uint32(s.opts.PID)})
		if err != nil {
			return nil, err
		}
		return []link.Link{l}, nil
	}
	var ls []link.Link
	for _, off := range offs {
		l, err := s.exe.Uprobe(name, prog, &link.UprobeOptions{Address: off, PID: s.opts.PID, Cookie: cookie})
		if err != nil {
			closeAll(ls)
			return nil, fmt.Errorf("at %#x: %w", off, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// Add attaches one more probe and returns its ID. IDs are never reused, so
// records of a probe detached for good still name its function; the slice
// Probes returned before may be stale afterwards.
func (s *Set) Add(p Probe) (int, error) {
	id := len(s.probes)
	if id >= MaxProbes {
		return 0, fmt.Errorf("%s: %d functions probed, at most %d", p.Func.Name, id, MaxProbes)
	}
	s.probes = append(s.probes, p)
	s.links = append(s.links, nil)
	s.gens = append(s.gens, 0)
	err := s.SetConfig(id, p.Config)
	if err == nil {
		err = s.attach(id)
	}
	if err != nil {
		s.probes, s.links, s.gens = s.probes[:id], s.links[:id], s.gens[:id]
		return 0, err
	}
	return id, nil
}

// Probes returns the probes of the set, indexed by probe ID.
func (s *Set) Probes() []Probe { return s.probes }

// Attached reports whether probe id is attached.
func (s *Set) Attached(id int) bool { return len(s.links[id]) > 0 }

// Detach removes the uprobes of probe id. Calls in flight stay in the
// goroutine table until a later event on their goroutine or Drain.
func (s *Set) Detach(id int) {
	// Entry first: once it is gone no new call starts, then the RETs.
	closeAll(s.links[id])
	s.links[id] = nil
}

// Pause removes the entry probe of id and keeps its RET probes: no new call
// is traced, and the calls in flight still return and are reported. Detach
// removes the rest once they have.
func (s *Set) Pause(id int) {
	if ls := s.links[id]; len(ls) > 0 && ls[0] != nil {
		ls[0].Close()
		ls[0] = nil
	}
}

// Reattach attaches probe id again after Detach or Pause.
func (s *Set) Reattach(id int) error {
	if s.Attached(id) {
		if s.links[id][0] != nil {
			return nil
		}
		s.Detach(id)
	}
	// A new generation: calls entered before the detach whose RETs went
	// unseen are not paired with the returns of calls entered from now on.
	s.gens[id]++
	if err := s.SetConfig(id, s.probes[id].Config); err != nil {
		return err
	}
	return s.attach(id)
}

// SetConfig changes the filters of probe id.
func (s *Set) SetConfig(id int, c Config) error {
	cfg := uprobes.UprobesProbeCfg{MinDurationNs: uint64(c.MinDuration), SampleEvery: c.SampleEvery, Gen: s.gens[id]}
	if c.EntryOnly {
		cfg.Flags |= 1
	}
	for i, capt := range s.probes[id].Captures {
		cfg.Captures[i] = captureSpec(capt)
		cfg.Ncaptures++
	}
	if c.EntryOnly != s.probes[id].EntryOnly && s.Attached(id) {
		return fmt.Errorf("%s: switching entry-only mode needs Detach first", s.probes[id].Func.Name)
	}
	if err := s.objs.ProbeCfgs.Put(uint32(id), cfg); err != nil {
		return fmt.Errorf("configure probe %d: %w", id, err)
	}
	s.probes[id].Config = c
	return nil
}

// Close detaches every probe and frees the BPF objects. Records still in the
// ring buffer are lost: call Drain first to report calls in flight.
func (s *Set) Close() error {
	for id := range s.links {
		s.Detach(id)
	}
	closeAll(s.panics)
	s.panics = nil
	if s.reader != nil {
		s.reader.Close()
	}
	return s.objs.Close()
}

func closeAll(ls []link.Link) {
	for _, l := range ls {
		if l != nil {
			l.Close()
		}
	}
}

func boolU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
