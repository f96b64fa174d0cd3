package calls

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// A Tally counts the samples of one goroutine's state taken while a call
// ran, for its Breakdown.
type Tally struct {
	Samples, CPU, Runnable, Syscall int
	Blocked                         map[string]int // by reason
	Where                           map[Place]int  // Share unset
}

// Breakdown turns the tally of a call that lasted d into estimates: each
// state's share of the samples, times d. Nil without a sample.
func (t *Tally) Breakdown(d time.Duration) *Breakdown {
	if t == nil || t.Samples == 0 {
		return nil
	}
	part := func(n int) time.Duration { return time.Duration(float64(d) * float64(n) / float64(t.Samples)) }
	b := &Breakdown{Samples: t.Samples, CPU: part(t.CPU), Runnable: part(t.Runnable), Syscall: part(t.Syscall)}
	if len(t.Blocked) > 0 {
		b.Blocked = make(map[string]time.Duration, len(t.Blocked))
		for r, n := range t.Blocked {
			b.Blocked[r] = part(n)
		}
	}
	for p, n := range t.Where {
		p.Share = float64(n) / float64(t.Samples)
		b.Where = append(b.Where, p)
	}
	slices.SortFunc(b.Where, func(x, y Place) int {
		return cmp.Or(cmp.Compare(y.Share, x.Share), cmp.Compare(x.Func, y.Func), cmp.Compare(x.Line, y.Line))
	})
	return b
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
		if i == 0 && p.name != "cpu" && p.name != "runnable" && len(b.Where) > 0 {
			item += " (" + b.Where[0].String() + ")"
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
