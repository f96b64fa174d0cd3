package container

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffWindow(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for attempt, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		if got := b.Window(attempt); got != want*time.Millisecond {
			t.Errorf("Window(%d) = %v, want %v", attempt, got, want*time.Millisecond)
		}
	}
	if got := b.Window(1 << 20); got != time.Second {
		t.Errorf("Window(huge) = %v, want Max", got)
	}
	if got := (Backoff{Base: time.Hour, Max: math.MaxInt64}).Window(100); got != math.MaxInt64 {
		t.Errorf("overflowing window = %v", got)
	}
	if got := (Backoff{}).Window(0); got != DefaultBackoff.Base {
		t.Errorf("zero Backoff: Window(0) = %v, want %v: a zero base would spin", got, DefaultBackoff.Base)
	}
	if got := (Backoff{Base: time.Second}).Window(3); got != time.Second {
		t.Errorf("Max below Base: Window = %v, want Base", got)
	}
}

// TestBackoffSpread checks that waits fill their whole window uniformly:
// bounded, mean near half the window, every tenth of it used.
func TestBackoffSpread(t *testing.T) {
	b := Backoff{Base: 10 * time.Millisecond, Max: 80 * time.Millisecond, Rand: rand.New(rand.NewPCG(1, 2))}
	const n = 20000
	for attempt := range 6 {
		w := b.Window(attempt)
		var sum float64
		var deciles [10]int
		for range n {
			d := b.Next(attempt)
			if d < 0 || d >= w {
				t.Fatalf("Next(%d) = %v outside [0, %v)", attempt, d, w)
			}
			sum += float64(d)
			deciles[int(10*d/w)]++
		}
		mean := sum / n / float64(w)
		if math.Abs(mean-0.5) > 0.02 {
			t.Errorf("attempt %d: mean wait %.3f of the window, want 0.5", attempt, mean)
		}
		for i, c := range deciles {
			if c < n/10*8/10 || c > n/10*12/10 {
				t.Errorf("attempt %d: decile %d has %d of %d waits", attempt, i, c, n)
			}
		}
	}

	// Same seed, same waits; different seeds (different nodes), different.
	seq := func(seed uint64) []time.Duration {
		b := Backoff{Base: time.Second, Max: time.Minute, Rand: rand.New(rand.NewPCG(seed, seed))}
		var s []time.Duration
		for i := range 8 {
			s = append(s, b.Next(i))
		}
		return s
	}
	a, a2, c := seq(7), seq(7), seq(8)
	same := 0
	for i := range a {
		if a[i] != a2[i] {
			t.Fatalf("seeded Backoff not reproducible: %v vs %v", a, a2)
		}
		if a[i] == c[i] {
			same++
		}
	}
	if same == len(a) {
		t.Errorf("different seeds gave the same waits %v", a)
	}

	// Unseeded: many nodes starting at once spread over the window.
	var early int
	for range 1000 {
		if (Backoff{Base: time.Minute, Max: time.Minute}).Next(0) < 6*time.Second {
			early++
		}
	}
	if early < 50 || early > 150 {
		t.Errorf("%d of 1000 unseeded waits fell in the first tenth, want ~100", early)
	}
}
