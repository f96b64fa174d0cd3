// Package ciliumsrc reads cilium's Go sources from its module on the Go
// module proxy: which functions a release declares, and where the values a
// capture names are at a function's entry, computed with go/types for an
// architecture and a Go release's standard library, with no build of the
// release: struct layouts depend only on the source and the layout rules of
// the architecture.
//
// Type-checking the packages of a cilium function with everything they
// import would load most of cilium and of Kubernetes. Layout needs far less:
// the types held by value in the structs and arguments on the way to a
// captured field. The checker marks those from the function's declaration,
// writes each package pruned to them (every pointer, map, channel, slice,
// function and interface becomes one of the same shape that names no other
// type) and type-checks the pruned packages.
package ciliumsrc
