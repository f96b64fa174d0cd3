package symbols

import (
	"container/heap"
	"slices"
	"strings"
)

// closest returns up to n function names most similar to s, for the "no
// function matches" error. A cheap pass over every name scores the
// trigrams it shares with s and keeps a few hundred candidates; those are
// ranked by the edit distance between s and the best-matching part of the
// name, so that both a full name with a typo and a partial name ("regenrateBPF"
// for "pkg/endpoint.(*Endpoint).regenerateBPF") find their function, then by
// length difference.
func (f *File) closest(s string, n int) []string {
	if s == "" {
		return nil
	}
	var c gramCounter
	c.init(s)
	const keep = 256
	var cands candHeap
	visit := func(name []byte) {
		score := c.score(name)
		if score == 0 || (len(cands) == keep && score <= cands[0].score) {
			return
		}
		cand := candidate{score: score, name: name}
		if len(cands) < keep {
			heap.Push(&cands, cand)
		} else {
			cands[0] = cand
			heap.Fix(&cands, 0)
		}
	}
	if !f.Stripped {
		if st, err := f.symbols(); err == nil {
			for i := 0; i < st.n(); i++ {
				if name, _, _, ok := st.fn(i); ok {
					visit(name)
				}
			}
		}
	} else if t, err := f.pcln(); err == nil {
		for i := 0; i < t.nfunc; i++ {
			visit(t.funcName(i))
		}
	}
	type ranked struct {
		name       string
		dist, diff int
	}
	var rs []ranked
	for _, cand := range cands {
		name := string(cand.name)
		rs = append(rs, ranked{name, partialDistance(s, name), abs(len(name) - len(s))})
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if a.dist != b.dist {
			return a.dist - b.dist
		}
		if a.diff != b.diff {
			return a.diff - b.diff
		}
		return strings.Compare(a.name, b.name)
	})
	var names []string
	for _, r := range rs {
		if len(names) == n {
			break
		}
		if len(names) == 0 || names[len(names)-1] != r.name {
			names = append(names, r.name)
		}
	}
	return names
}

// A gramCounter scores names by the k-grams (k = 3, or less for very short
// queries) they share with the query, through a 4096-entry hashed set:
// collisions only add noise to a prefilter.
type gramCounter struct {
	k     int
	grams [1 << 12]bool
	n     int // k-grams in the query
}

func gramHash(b []byte) uint32 {
	var h uint32
	for _, c := range b {
		h = h<<8 | uint32(c)
	}
	return h * 2654435761 >> 20
}

func (c *gramCounter) init(s string) {
	c.k = min(3, len(s))
	for i := 0; i+c.k <= len(s); i++ {
		c.grams[gramHash([]byte(s[i:i+c.k]))] = true
		c.n++
	}
}

// score is the share of k-grams in common, scaled like a Dice coefficient so
// that long names do not win by length alone.
func (c *gramCounter) score(name []byte) int {
	shared := 0
	for i := 0; i+c.k <= len(name); i++ {
		if c.grams[gramHash(name[i:i+c.k])] {
			shared++
		}
	}
	return shared << 16 / (c.n + len(name))
}

type candidate struct {
	score int
	name  []byte
}

// candHeap is a min-heap on score: its root is the candidate to evict.
type candHeap []candidate

func (h candHeap) Len() int           { return len(h) }
func (h candHeap) Less(i, j int) bool { return h[i].score < h[j].score }
func (h candHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *candHeap) Push(x any)        { *h = append(*h, x.(candidate)) }
func (h *candHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// partialDistance is the edit distance between s and the substring of name
// closest to it: skipping a prefix or suffix of name is free.
func partialDistance(s, name string) int {
	prev := make([]int, len(name)+1) // row 0: any start in name is free
	cur := make([]int, len(name)+1)
	for i := 1; i <= len(s); i++ {
		cur[0] = i
		for j := 1; j <= len(name); j++ {
			v := prev[j-1]
			if s[i-1] != name[j-1] {
				v++
			}
			v = min(v, prev[j]+1, cur[j-1]+1)
			cur[j] = v
		}
		prev, cur = cur, prev
	}
	return slices.Min(prev)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
