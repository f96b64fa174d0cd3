package main

import (
	"context"

	"github.com/cilium/cilium/pkg/a"
	"github.com/cilium/cilium/pkg/b"
)

func main() {
	t := &a.T{Inner: &a.Inner{}}
	t.Method(context.Background(), b.Big{}, "s", 1, true)
	a.Spill([2]int{}, 1, 2, 3, 4, 5, 6, 7, 8, "last")
	a.State("x").Value(t.Inner, "l")
	t.Result()
	a.Many()
	a.NotLast()
}
