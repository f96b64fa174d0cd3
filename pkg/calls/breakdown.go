package calls

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// A Tally is where a call's time went, as the samples of its goroutine's
// state taken while it ran say: each sample stands for the time since the
// one before (since the call's start, for the first).
type Tally struct {
	Samples                int
	MaxGap                 time.Duration
	CPU, Runnable, Syscall time.Duration
	Blocked                map[string]time.Duration // by reason
	Where                  map[Place]time.Duration  // Share unset
}

// Breakdown returns the tally as a Breakdown; nil without a sample.
func (t *Tally) Breakdown() *Breakdown {
	if t == nil || t.Samples == 0 {
		return nil
	}
	b := &Breakdown{Samples: t.Samples, MaxGap: t.MaxGap, CPU: t.CPU, Runnable: t.Runnable, Syscall: t.Syscall}
	total := t.CPU + t.Runnable + t.Syscall
	if len(t.Blocked) > 0 {
		b.Blocked = make(map[string]time.Duration, len(t.Blocked))
		for r, d := range t.Blocked {
			b.Blocked[r] = d
			total += d
		}
	}
	for p, d := range t.Where {
		if total > 0 {
			p.Share = float64(d) / float64(total)
		}
		b.Where = append(b.Where, p)
	}
	slices.SortFunc(b.Where, func(x, y Place) int {
		return cmp.Or(cmp.Compare(y.Share, x.Share), cmp.Compare(x.Func, y.Func), cmp.Compare(x.Line, y.Line), cmp.Compare(x.State, y.State))
	})
	return b
}

// shares are the summary's columns of the tally: the percentages of its
// time on CPU, runnable, in system calls and blocked, tab-terminated; "-"
// in each without a sample.
func (t *Tally) shares() string {
	var blocked time.Duration
	for _, d := range t.Blocked {
		blocked += d
	}
	total := t.CPU + t.Runnable + t.Syscall + blocked
	if t.Samples == 0 || total == 0 {
		return "-\t-\t-\t-\t"
	}
	pct := func(d time.Duration) float64 { return 100 * float64(d) / float64(total) }
	return fmt.Sprintf("%.0f%%\t%.0f%%\t%.0f%%\t%.0f%%\t", pct(t.CPU), pct(t.Runnable), pct(t.Syscall), pct(blocked))
}

// add adds the time of b.
func (t *Tally) add(b *Breakdown) {
	t.Samples += b.Samples
	t.MaxGap = max(t.MaxGap, b.MaxGap)
	t.CPU += b.CPU
	t.Runnable += b.Runnable
	t.Syscall += b.Syscall
	for r, d := range b.Blocked {
		if t.Blocked == nil {
			t.Blocked = map[string]time.Duration{}
		}
		t.Blocked[r] += d
	}
	var total time.Duration
	for _, d := range b.Blocked {
		total += d
	}
	total += b.CPU + b.Runnable + b.Syscall
	for _, p := range b.Where {
		if t.Where == nil {
			t.Where = map[Place]time.Duration{}
		}
		share := p.Share
		p.Share = 0
		t.Where[p] += time.Duration(share * float64(total))
	}
}

// ShortName strips the import path from a fully qualified Go function name:
// "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF" becomes
// "endpoint.(*Endpoint).regenerateBPF". Type parameters may contain slashes,
// so only the part before the first '[' is searched.
func ShortName(fn string) string {
	head := fn
	if i := strings.IndexByte(head, '['); i >= 0 {
		head = head[:i]
	}
	if i := strings.LastIndexByte(head, '/'); i >= 0 {
		return fn[i+1:]
	}
	return fn
}

// maxPlaces is how many places a breakdown names.
const maxPlaces = 3

// String puts the breakdown on one line, the largest share first, with
// where the largest wait was, and the sample count:
//
//	cpu 12% · mutex 71% (endpoint.go:512 (*Endpoint).lockAlive) · syscall 9% · runnable 8% (412 samples)
func (b *Breakdown) String() string {
	type part struct {
		name string
		d    time.Duration
	}
	parts := []part{{"cpu", b.CPU}, {"runnable", b.Runnable}, {"syscall", b.Syscall}}
	for r, d := range b.Blocked {
		parts = append(parts, part{r, d})
	}
	var total time.Duration
	for _, p := range parts {
		total += p.d
	}
	slices.SortStableFunc(parts, func(x, y part) int { return cmp.Or(cmp.Compare(y.d, x.d), cmp.Compare(x.name, y.name)) })
	var s []string
	for i, p := range parts {
		if p.d == 0 || total == 0 {
			continue
		}
		item := fmt.Sprintf("%s %.0f%%", p.name, 100*float64(p.d)/float64(total))
		if i == 0 {
			for _, w := range b.Where {
				if w.State == p.name {
					item += " (" + w.String() + ")"
					break
				}
			}
		}
		s = append(s, item)
	}
	return fmt.Sprintf("%s (%d samples)", strings.Join(s, " · "), b.Samples)
}

// String names the place as file:line function, short.
func (p Place) String() string {
	fn := p.Func
	if i := strings.LastIndexByte(fn, '/'); i >= 0 {
		fn = fn[i+1:]
	}
	if _, after, ok := strings.Cut(fn, "."); ok {
		fn = after
	}
	return fmt.Sprintf("%s:%d %s", filepath.Base(p.File), p.Line, fn)
}

// Top returns the first places, at most maxPlaces.
func (b *Breakdown) Top() []Place {
	return b.Where[:min(len(b.Where), maxPlaces)]
}
