// Package args finds where a function's arguments and the values captured
// from them are at its entry: it reads the function's parameters from DWARF,
// assigns them registers as Go's register ABI does (amd64 and arm64), and
// resolves capture expressions (e.desiredPolicy.Revision, or the raw form
// argN+OFFSET:TYPE that needs no DWARF) to a register, offsets and a kind,
// the Capture the BPF programs execute; results (retN) likewise, as they are
// at each RET, and a last result of type error. It also gives field offsets
// of runtime's types, and the error types whose messages the probes read,
// with their layouts, found in an executable through its itabs. DWARF is streamed one compile unit at a time, keeping
// only the units of the probed functions' packages and of runtime (which
// holds every type), and of the types only those the expressions follow are
// read: debug/dwarf would decompress and read hundreds of megabytes of a
// large binary.
package args
