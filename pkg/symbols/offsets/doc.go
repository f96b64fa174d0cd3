// Package offsets supplies what reading a Go process's memory needs to know
// of its runtime and types, for stripped executables too, which have no
// DWARF to find them in: runtime.g's layout (the goid the probes read, and
// the fields a goroutine's state is read from) and the names of
// runtime.waitReason's values, from tables of Go releases or else from the
// executable; and offsets files, which carry captures and those runtime
// facts resolved on an unstripped build to a stripped build of the same
// code, tied to it by a fingerprint that stripping does not change.
package offsets
