// Package b holds types that pkg/a uses by value and through pointers.
package b

const (
	x = iota
	y
	// N is 3, counted with iota.
	N = y * 3
)

// Big is passed in two integer registers and one floating-point one.
type Big struct {
	X, Y int64
	Z    float64
}

// Box holds K by value, V only through a pointer.
type Box[K any, V any] struct {
	k K
	v *V
	n int
}

type Embedded struct{ A, B uint64 }

type Iface interface{ M() Big }

type Label string

// Unused is never held by value: the checker need not read it.
type Unused struct{ big [1 << 12]byte }
