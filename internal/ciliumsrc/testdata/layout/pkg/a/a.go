package a

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/cilium/pkg/b"
)

type State string

type T struct {
	mu      sync.RWMutex
	m       sync.Map
	created time.Time
	ptr     atomic.Pointer[b.Unused]
	box     b.Box[int64, b.Unused]
	arr     [b.N]uint32
	addr    netip.Addr
	*b.Embedded
	b.Iface
	fn    func(int) error
	ch    chan b.Unused
	m2    map[string]*b.Unused
	ID    uint16
	Name  string
	State State
	Inner *Inner
	Flag  bool
	Count int32
}

type Inner struct {
	pad   [3]byte
	Rev   uint64
	Label b.Label
}

//go:noinline
func (t *T) Method(ctx context.Context, big b.Big, s string, n int, flag bool) error {
	return nil
}

//go:noinline
func Spill(p [2]int, a, b2, c, d, e, f, g, h int, last string) {}

//go:noinline
func (s State) Value(inner *Inner, l b.Label) {}

// Result returns its error after a struct and a string held in registers.
//
//go:noinline
func (t *T) Result() (b.Big, string, error) { return b.Big{}, "", nil }

// Many returns its error in registers on arm64 only: amd64 has nine
// integer registers, the eight ints take all but one.
//
//go:noinline
func Many() (a, b2, c, d, e, f, g, h int, err error) { return }

// NotLast returns an error, but not last.
//
//go:noinline
func NotLast() (error, int) { return nil, 0 }
