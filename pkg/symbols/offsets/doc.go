// Package offsets supplies the memory offsets the probes need on a stripped
// executable, which has no DWARF to find them in: the offset of runtime.g's
// goid, from a table of Go releases or else DWARF, and offsets files, which
// carry captures and the goid offset resolved on an unstripped build to a
// stripped build of the same code, tied to it by a fingerprint that
// stripping does not change.
package offsets
