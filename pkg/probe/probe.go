package probe

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/cilium-tracer/tracer/bpf/uprobes"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
	"github.com/cilium-tracer/tracer/pkg/symbols/procmaps"
)

// MaxProbes is how many functions one Set can trace: the size of the BPF
// maps indexed by probe ID.
const MaxProbes = 1024

// MaxUprobes is how many uprobes, entries and RETs, one Set attaches. The
// cost is per uprobe, not per function: each is a breakpoint the kernel
// writes into the target's text (a private copy of each page it lands on)
// and a trap on every hit, and without uprobe_multi (before Linux 6.6) a
// perf event, attached and removed one at a time. Functions average two to
// three RETs (cilium-agent's pkg/policy.* and pkg/endpoint.*: 800 functions,
// 2,141 uprobes), so 4 per function lets MaxProbes functions of usual size
// through and stops a glob of huge functions with hundreds of RETs each.
const MaxUprobes = 4 * MaxProbes

// MaxNesting is how many traced calls one goroutine can have in flight; a
// call deeper than that is counted untracked.
const MaxNesting = len(uprobes.UprobesGstate{}.Frames)

// A Probe is one function to trace. Its index in the slice given to Attach
// is its probe ID in records and counters.
type Probe struct {
	Func symbols.Func
	// Entry, when not zero, is the file offset of the entry uprobe in
	// place of Func.Offset. An EntryOnly probe goes past the stack check
	// (symbols.File.EntryOnce): it has no frame table to see a call pass
	// its entry twice through runtime.morestack.
	Entry uint64
	// Returns are the file offsets of every RET of the function; unused
	// for EntryOnly probes.
	Returns []uint64
	// Captures are read at each entry and reported with the call's
	// record, in this order.
	Captures []args.Capture
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
	// Announce sends an Entered record at each traced call's entry, which
	// wakes the reader at once: user space can then watch the call's
	// goroutine while it runs. Another record per call: for slow
	// functions.
	Announce bool
	// BurstLimit is the probe's breaker: past this many entry hits on
	// one CPU within one Options.BreakerWindow, its entries only count
	// (Counters.Shed) until it is attached again, and a Tripped record
	// wakes the reader at once. 0: no breaker.
	BurstLimit uint32
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
	// BreakerWindow is the window Config.BurstLimit counts hits in;
	// default DefaultBreakerWindow.
	BreakerWindow time.Duration
	// ErrorTypes are the error types whose messages the probes read from
	// the errors functions return (args.ErrorTypes); of others, only the
	// type is reported.
	ErrorTypes []args.ErrorType
	// Mode, if set, is how the probes run in place of the fastest the
	// kernel supports (kernel.Features.Mode): tests run the fallbacks
	// of older kernels with it.
	Mode *kernel.Mode
}

// DefaultBreakerWindow is short beside the governor's interval: a burst
// that trips a breaker costs the target a few windows of traps at most.
const DefaultBreakerWindow = 10 * time.Millisecond

// A Set is a group of probes attached to one executable.
type Set struct {
	objs   uprobes.UprobesObjects
	exe    *link.Executable
	opts   Options
	probes []Probe
	// entryOf and retsOf are, per probe, the group of links its entry and
	// its RETs are attached through; nil when detached.
	entryOf, retsOf []*group
	gens            []uint32 // per probe: how often it was attached again
	pushesBP        []bool   // per probe: its entry is PUSH %rbp or ENDBR64
	panics          []link.Link
	reader          *ringbuf.Reader
	// mode.Multi attaches through uprobe_multi links (Linux 6.6+): one
	// link for the sites of many probes instead of one perf event each,
	// and, on kernels with the CVE-2025-38466 fix, no CAP_SYS_ADMIN
	// needed. Without mode.Cookies the probe IDs are in probeIDs, by
	// address in the target: file offset + fileBase.
	mode     kernel.Mode
	probeIDs *ebpf.Map
	fileBase uint64
}

// A group is one BPF program attached at the entries, or at the RETs, of
// several probes. With uprobe_multi it is a single link: closing a link
// waits for the probes running on every CPU to finish (tens of
// milliseconds), so a link per function made detaching 800 functions take
// 84 s. Without uprobe_multi it is one perf uprobe per site, and a group
// holds one probe.
type group struct {
	ids   []int
	links []link.Link
	// sites are the addresses the group put in the probe ID map (no
	// cookies): each site is one probe's, so they go with the group.
	sites    []uint64
	probeIDs *ebpf.Map
}

func (g *group) close() {
	closeAll(g.links)
	g.links = nil
	for _, a := range g.sites {
		g.probeIDs.Delete(a)
	}
	g.sites = nil
}

// Attach loads the BPF programs and attaches them at the entry and every RET
// of each probe. On error nothing stays attached.
func Attach(probes []Probe, opts Options) (_ *Set, err error) {
	if len(probes) == 0 {
		return nil, errors.New("no functions to probe")
	}
	if n := countUprobes(probes); len(probes) > MaxProbes || n > MaxUprobes {
		return nil, fmt.Errorf("%d functions with %d uprobes to probe, at most %d functions and %d uprobes", len(probes), n, MaxProbes, MaxUprobes)
	}
	for _, p := range probes {
		if err := checkCaptures(p, runtime.GOARCH); err != nil {
			return nil, err
		}
	}
	feats := kernel.Probe()
	mode, err := feats.Mode()
	if err != nil {
		return nil, err
	}
	if opts.Mode != nil {
		if err := feats.Allows(*opts.Mode); err != nil {
			return nil, err
		}
		mode = *opts.Mode
	}
	spec, err := loadSpec(mode)
	if err != nil {
		return nil, fmt.Errorf("load BPF spec: %w", err)
	}
	if err := spec.Variables["goid_offset"].Set(opts.GoidOffset); err != nil {
		return nil, fmt.Errorf("set goid_offset: %w", err)
	}
	if err := spec.Variables["capture_stacks"].Set(boolU32(opts.Stacks)); err != nil {
		return nil, fmt.Errorf("set capture_stacks: %w", err)
	}
	if opts.BreakerWindow <= 0 {
		opts.BreakerWindow = DefaultBreakerWindow
	}
	if err := spec.Variables["breaker_window_ns"].Set(uint64(opts.BreakerWindow)); err != nil {
		return nil, fmt.Errorf("set breaker_window_ns: %w", err)
	}

	s := &Set{opts: opts, probes: probes, entryOf: make([]*group, len(probes)), retsOf: make([]*group, len(probes)), gens: make([]uint32, len(probes)), mode: mode}
	if s.pushesBP, err = entriesPushBP(opts.Binary, probes); err != nil {
		return nil, err
	}
	if !mode.Cookies {
		if err := checkSites(probes); err != nil {
			return nil, err
		}
		if s.fileBase, err = fileBase(opts.Binary, opts.PID, probes[0].EntryOffset()); err != nil {
			return nil, err
		}
	}
	if mode.Multi {
		for _, p := range spec.Programs {
			p.AttachType = ebpf.AttachTraceUprobeMulti
		}
	}
	if err := s.load(spec); err != nil {
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
	if err := s.setErrorTypes(opts.ErrorTypes); err != nil {
		return nil, err
	}

	s.exe, err = link.OpenExecutable(opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", opts.Binary, err)
	}
	// Panic probes first: a call must not start unseen by them.
	if len(opts.Panics) > 0 {
		s.panics, err = s.uprobes(s.objs.GoPanic, opts.Panics, make([]uint64, len(opts.Panics)))
		if err != nil {
			return nil, fmt.Errorf("attach panic probes: %w", err)
		}
	}
	ids := make([]int, len(probes))
	for id := range ids {
		ids[id] = id
	}
	if s.mode.Multi {
		err = s.attach(ids)
	} else {
		// A perf uprobe per site either way: a group per probe lets one
		// be detached without touching the others.
		for _, id := range ids {
			if err = s.attach([]int{id}); err != nil {
				break
			}
		}
	}
	if err != nil {
		return nil, err
	}

	s.reader, err = ringbuf.NewReader(s.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return s, nil
}

// attach attaches probes ids as one group of entries and one of RETs, the
// RETs first, so no call is entered that could not be seen returning.
func (s *Set) attach(ids []int) error {
	var withRets []int
	for _, id := range ids {
		if p := s.probes[id]; !p.EntryOnly {
			if len(p.Returns) == 0 {
				return fmt.Errorf("%s: no RET instructions to probe", p.Func.Name)
			}
			withRets = append(withRets, id)
		}
	}
	rets, err := s.link(withRets, true)
	if err != nil {
		return err
	}
	entries, err := s.link(ids, false)
	if err != nil {
		rets.close()
		return err
	}
	for _, id := range withRets {
		s.retsOf[id] = rets
	}
	for _, id := range ids {
		s.entryOf[id] = entries
	}
	return nil
}

// link attaches the entry program at the entries of probes ids, or the
// return program at their RETs, with each site's probe ID as its cookie:
// one uprobe_multi link for all of them where the kernel has it, else one
// perf uprobe per site. No ids, no links.
func (s *Set) link(ids []int, rets bool) (*group, error) {
	g := &group{ids: ids}
	if len(ids) == 0 {
		return g, nil
	}
	prog, what := s.objs.GoEntry, "entry"
	if rets {
		prog, what = s.objs.GoReturn, "RETs"
	}
	var offs, cookies []uint64
	for _, id := range ids {
		sites := []uint64{s.probes[id].EntryOffset()}
		if rets {
			sites = s.probes[id].Returns
		}
		for _, off := range sites {
			offs = append(offs, off)
			cookies = append(cookies, uint64(id))
		}
	}
	if !s.mode.Cookies {
		// The programs find the probe by the address that fired.
		g.probeIDs = s.probeIDs
		for i, off := range offs {
			a := off + s.fileBase
			if err := s.probeIDs.Put(a, uint32(cookies[i])); err != nil {
				g.close()
				return nil, fmt.Errorf("probe ID of site %#x: %w", off, err)
			}
			g.sites = append(g.sites, a)
		}
	}
	ls, err := s.uprobes(prog, offs, cookies)
	if err != nil {
		g.close()
		if len(ids) == 1 {
			return nil, fmt.Errorf("attach %s %s: %w", s.probes[ids[0]].Func.Name, what, err)
		}
		return nil, fmt.Errorf("attach the %s of %d functions (%d uprobes): %w", what, len(ids), len(offs), err)
	}
	g.links = ls
	return g, nil
}

// uprobes attaches prog at each file offset, with its cookie where the
// kernel has them: one uprobe_multi link for all of them, or one perf
// uprobe each.
func (s *Set) uprobes(prog *ebpf.Program, offs, cookies []uint64) ([]link.Link, error) {
	if s.mode.Multi {
		l, err := s.exe.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: offs, Cookies: cookies, PID: uint32(s.opts.PID)})
		if err != nil {
			return nil, err
		}
		return []link.Link{l}, nil
	}
	var ls []link.Link
	for i, off := range offs {
		o := &link.UprobeOptions{Address: off, PID: s.opts.PID}
		if s.mode.Cookies {
			o.Cookie = cookies[i]
		}
		l, err := s.exe.Uprobe("", prog, o)
		if err != nil {
			closeAll(ls)
			return nil, fmt.Errorf("at %#x: %w", off, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// unlink takes probe id out of the group serving its entry (rets false) or
// its RETs. The group's other probes get new links, attached before the old
// ones close, so none of their calls goes unseen. In the overlap both fire
// on one hit, and the BPF programs make that harmless: the second entry
// finds its call's frame on top at the same depth, as after morestack, and
// is counted as reentered; the second RET finds that frame already popped.
// Only counters see double in the overlap: hits, reentered, skipped or
// untracked, and an entry-only probe's count per stack; an unsampled entry
// gets a second draw. On error the probe stays attached.
func (s *Set) unlink(id int, rets bool) error {
	of := s.entryOf
	if rets {
		of = s.retsOf
	}
	old := of[id]
	if old == nil {
		return nil
	}
	rest := slices.DeleteFunc(slices.Clone(old.ids), func(x int) bool { return x == id })
	if len(rest) > 0 {
		g, err := s.link(rest, rets)
		if err != nil {
			return err
		}
		for _, r := range rest {
			of[r] = g
		}
	}
	of[id] = nil
	old.close()
	return nil
}

// countUprobes is how many uprobes probes need: an entry each and their
// RETs.
func countUprobes(probes []Probe) int {
	n := 0
	for _, p := range probes {
		n++
		if !p.EntryOnly {
			n += len(p.Returns)
		}
	}
	return n
}

// Add attaches one more probe, through links of its own, and returns its
// ID. IDs are never reused, so records of a probe detached for good still
// name its function; the slice Probes returned before may be stale
// afterwards.
func (s *Set) Add(p Probe) (int, error) {
	id := len(s.probes)
	n := s.Uprobes() + countUprobes([]Probe{p})
	if id >= MaxProbes || n > MaxUprobes {
		return 0, fmt.Errorf("%s: %d functions with %d uprobes to probe, at most %d functions and %d uprobes", p.Func.Name, id+1, n, MaxProbes, MaxUprobes)
	}
	if !s.mode.Cookies {
		if err := checkSites(append(slices.Clip(s.probes), p)); err != nil {
			return 0, err
		}
	}
	s.probes = append(s.probes, p)
	s.entryOf, s.retsOf = append(s.entryOf, nil), append(s.retsOf, nil)
	s.gens = append(s.gens, 0)
	bp, err := entriesPushBP(s.opts.Binary, []Probe{p})
	if err != nil {
		return 0, err
	}
	s.pushesBP = append(s.pushesBP, bp[0])
	err = s.SetConfig(id, p.Config)
	if err == nil {
		err = s.attach([]int{id})
	}
	if err != nil {
		s.probes, s.entryOf, s.retsOf, s.gens, s.pushesBP = s.probes[:id], s.entryOf[:id], s.retsOf[:id], s.gens[:id], s.pushesBP[:id]
		return 0, err
	}
	return id, nil
}

// Goroutines returns the programs' goroutine table, the traced calls in
// flight by goroutine (bpf/uprobes/gstate.h), for programs that share it.
func (s *Set) Goroutines() *ebpf.Map { return s.objs.Gstates }

// Mode returns how the probes run.
func (s *Set) Mode() kernel.Mode { return s.mode }

// Probes returns the probes of the set, indexed by probe ID.
func (s *Set) Probes() []Probe { return s.probes }

// Attached reports whether probe id is attached, if only by its RETs.
func (s *Set) Attached(id int) bool { return s.entryOf[id] != nil || s.retsOf[id] != nil }

// Uprobes returns how many uprobes are attached, entries and RETs.
func (s *Set) Uprobes() int {
	n := 0
	for id, p := range s.probes {
		if s.entryOf[id] != nil {
			n++
		}
		if s.retsOf[id] != nil {
			n += len(p.Returns)
		}
	}
	return n
}

// Detach removes the uprobes of probe id. Calls in flight stay in the
// goroutine table until a later event on their goroutine or Drain. On error
// some of them are still attached.
func (s *Set) Detach(id int) error {
	// Entry first: once it is gone no new call starts, then the RETs.
	if err := s.Pause(id); err != nil {
		return err
	}
	return s.unlink(id, true)
}

// Pause removes the entry probe of id and keeps its RET probes: no new call
// is traced, and the calls in flight still return and are reported. Detach
// removes the rest once they have. On error the entry is still attached.
func (s *Set) Pause(id int) error {
	return s.unlink(id, false)
}

// Reattach attaches probe id again after Detach or Pause, through links of
// its own.
func (s *Set) Reattach(id int) error {
	if s.entryOf[id] != nil {
		return nil
	}
	if err := s.Detach(id); err != nil {
		return err
	}
	// A new generation: calls entered before the detach whose RETs went
	// unseen are not paired with the returns of calls entered from now on.
	s.gens[id]++
	if err := s.SetConfig(id, s.probes[id].Config); err != nil {
		return err
	}
	return s.attach([]int{id})
}

func (s *Set) setErrorTypes(ts []args.ErrorType) error {
	if n := int(s.objs.ErrLayouts.MaxEntries()); len(ts) > n {
		return fmt.Errorf("%d error types, at most %d", len(ts), n)
	}
	for _, t := range ts {
		l := uprobes.UprobesErrLayout{Kind: uint32(t.Kind), Str: t.Str, Inner: t.Inner, Word: t.Word, WordDeref: t.WordDeref}
		if err := s.objs.ErrLayouts.Put(t.Hash, l); err != nil {
			return fmt.Errorf("error type %s: %w", t.Name, err)
		}
	}
	return nil
}

// SetConfig changes the filters of probe id.
func (s *Set) SetConfig(id int, c Config) error {
	cfg := uprobes.UprobesProbeCfg{MinDurationNs: uint64(c.MinDuration), SampleEvery: c.SampleEvery, Gen: s.gens[id], BurstLimit: c.BurstLimit}
	if c.EntryOnly {
		cfg.Flags |= flagEntryOnly
	}
	if s.pushesBP[id] {
		cfg.Flags |= flagPushesBP
	}
	if c.Announce {
		cfg.Flags |= flagAnnounce
	}
	for i, capt := range s.probes[id].Captures {
		if capt.Kind == args.KindError {
			// Last (checkCaptures), in no slot.
			cfg.Flags |= flagError | flagReturns
			cfg.ErrReg = uint32(capt.Reg)
			continue
		}
		cfg.Captures[i] = captureSpec(capt)
		cfg.Ncaptures++
		switch {
		case capt.AtReturn:
			cfg.Flags |= flagReturns
		default:
			cfg.Flags |= flagEntryCaptures
		}
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

// detachAll closes every link: every entry first, so no call starts
// while the RETs are being removed, then the RETs.
func (s *Set) detachAll() {
	for _, of := range [][]*group{s.entryOf, s.retsOf} {
		var ls []link.Link
		for id, g := range of {
			if g != nil {
				// A group serving several probes is closed once.
				ls = append(ls, g.links...)
				g.links = nil
			}
			of[id] = nil
		}
		closeAll(ls)
	}
}

// Stop detaches every probe and reports the calls seen: while the uprobes
// are being removed, which can take seconds (one perf uprobe at a time
// before Linux 6.6), it keeps reading the ring buffer, so calls returning
// meanwhile are neither lost to a full buffer nor left in flight; once the
// last link is closed it reads what the buffer still holds, then drains the
// calls still in flight as InFlight records. Each record goes to handle, on
// the caller's goroutine. Close frees the rest.
func (s *Set) Stop(handle func(*Record)) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.detachAll()
	}()
	var readErr error
	for detaching := true; detaching && readErr == nil; {
		deadline := time.Now().Add(20 * time.Millisecond)
		select {
		case <-done:
			// The last link is closed and nothing adds to the buffer
			// anymore: read it to the end.
			detaching, deadline = false, time.Now()
		default:
		}
		readErr = s.readUntil(deadline, handle)
	}
	<-done
	recs, err := s.Drain()
	for i := range recs {
		handle(&recs[i])
	}
	return errors.Join(readErr, err)
}

// readUntil passes every record to handle until none comes before deadline.
func (s *Set) readUntil(deadline time.Time, handle func(*Record)) error {
	var rec Record
	s.SetDeadline(deadline)
	for {
		if err := s.Read(&rec); err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				return nil
			case errors.Is(err, ErrInterrupted):
				continue // meant for a reader that has stopped reading
			}
			return err
		}
		handle(&rec)
	}
}

// Close detaches every probe and frees the BPF objects. Records still in the
// ring buffer are lost: Stop first reports them and the calls in flight.
func (s *Set) Close() error {
	s.detachAll()
	closeAll(s.panics)
	s.panics = nil
	if s.reader != nil {
		s.reader.Close()
	}
	if s.probeIDs != nil {
		s.probeIDs.Close()
	}
	return s.objs.Close()
}

// closeAll closes links, many at a time: closing one waits until no CPU
// may still run its program, about 100 ms for a perf uprobe on Linux 6.18,
// and concurrent waits partly overlap (338 perf uprobes: 33 s instead of
// 46 s).
func closeAll(ls []link.Link) {
	work := make(chan link.Link)
	var wg sync.WaitGroup
	for range min(len(ls), 64) {
		wg.Go(func() {
			for l := range work {
				l.Close()
			}
		})
	}
	for _, l := range ls {
		if l != nil {
			work <- l
		}
	}
	close(work)
	wg.Wait()
}

func boolU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// EntryOffset is the file offset of p's entry uprobe: Entry, or the
// function's entry.
func (p *Probe) EntryOffset() uint64 {
	if p.Entry != 0 {
		return p.Entry
	}
	return p.Func.Offset
}

// entriesPushBP reports, per probe, whether the instruction at its entry
// uprobe in binary is PUSH %rbp or ENDBR64: Go functions without a stack
// check start so, and the others continue so after it. There x86 kernels
// >= 6.11 put the return address into a user stack walk themselves, and
// the BPF program must not add it again (stack_id in uprobes.c).
func entriesPushBP(binary string, probes []Probe) ([]bool, error) {
	out := make([]bool, len(probes))
	if runtime.GOARCH != "amd64" {
		return out, nil
	}
	f, err := os.Open(binary)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", binary, err)
	}
	defer f.Close()
	for i, p := range probes {
		var b [4]byte
		if _, err := f.ReadAt(b[:], int64(p.EntryOffset())); err != nil {
			return nil, fmt.Errorf("%s: read entry at file offset %#x: %w", p.Func.Name, p.EntryOffset(), err)
		}
		out[i] = b[0] == 0x55 || b == [4]byte{0xf3, 0x0f, 0x1e, 0xfa}
	}
	return out, nil
}

// loadSpec returns the BPF objects mode m runs: without attach cookies,
// those built for older kernels.
func loadSpec(m kernel.Mode) (*ebpf.CollectionSpec, error) {
	if m.Cookies {
		return uprobes.LoadUprobes()
	}
	return uprobes.LoadUprobesLegacy()
}

// load loads the programs and maps of spec; without cookies also the map of
// probe IDs by address.
func (s *Set) load(spec *ebpf.CollectionSpec) error {
	if s.mode.Cookies {
		return spec.LoadAndAssign(&s.objs, nil)
	}
	objs := struct {
		uprobes.UprobesObjects
		ProbeIDs *ebpf.Map `ebpf:"probe_ids"`
	}{}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return err
	}
	s.objs, s.probeIDs = objs.UprobesObjects, objs.ProbeIDs
	return nil
}

// checkSites refuses two probes at one entry: without cookies a site's
// address names one probe.
func checkSites(probes []Probe) error {
	seen := map[uint64]int{}
	for id, p := range probes {
		if other, ok := seen[p.EntryOffset()]; ok {
			return fmt.Errorf("%s: probed twice (probes %d and %d), which needs attach cookies (Linux 5.15)", p.Func.Name, other, id)
		}
		seen[p.EntryOffset()] = id
	}
	return nil
}

// fileBase returns where process pid maps file offset 0 of binary's
// executable segment, found through the mapping holding file offset off.
// Without a PID it is where every process maps it, which only a non-PIE
// executable has.
func fileBase(binary string, pid int, off uint64) (uint64, error) {
	if pid == 0 {
		return fixedFileBase(binary, off)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(binary, &st); err != nil {
		return 0, err
	}
	base, err := procmaps.FileBase(pid, st.Ino, off)
	if err != nil {
		return 0, fmt.Errorf("load address of %s: %w", binary, err)
	}
	return base, nil
}

// fixedFileBase is fileBase for a non-PIE executable, from its program
// headers: the segment holding off is loaded at its own address in every
// process.
func fixedFileBase(binary string, off uint64) (uint64, error) {
	f, err := elf.Open(binary)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		return 0, fmt.Errorf("%s is position-independent: tracing every process that runs it needs attach cookies (Linux 5.15), or a PID", binary)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Off <= off && off < p.Off+p.Filesz {
			return p.Vaddr - p.Off, nil
		}
	}
	return 0, fmt.Errorf("%s: file offset %#x is in no loaded segment", binary, off)
}
