// Package symbols reads Go executables: build information, the function
// table (from .symtab or, in stripped binaries, .gopclntab), file offsets for
// attaching probes, the offsets of every RET instruction, and PC to
// function/file/line symbolization including inlined frames.
//
// Like the standard library's debug packages it holds plain data, does no
// logging and treats every input binary as untrusted.
//
// Go 1.21 through 1.26 are supported on amd64 and arm64, PIE or not,
// stripped or not, internally or externally linked; Go 1.18-1.20 binaries
// (common among distributions' packages) are read with their older table
// layouts. Nothing is materialized per function: tables are read in place
// from a memory mapping, so opening a 130 MB binary and resolving a few
// functions costs tens of milliseconds and megabytes. DWARF, which only
// captures need, is streamed one compile unit at a time: only the units of
// the probed functions' packages and of runtime (which holds the types) are
// kept, and of the types only those the capture expressions follow are read.
//
// Function names follow the Go toolchain: a function with both an ABI0 and
// an ABIInternal body (assembly called from Go, or Go called from assembly)
// has its ABI0 body named with the ".abi0" suffix, as in the linker's symbol
// table; every other function has its plain Go name.
//
// Return offsets are only given for bodies that decode completely, since a
// probe off an instruction boundary corrupts the target. On amd64 that
// excludes VEX/EVEX-encoded (AVX) instructions, which golang.org/x/arch
// decodes with wrong lengths in some cases; Go emits them only in assembly
// and with GOAMD64=v3 or later. On arm64, whose instructions are fixed-width,
// LSE atomics and system instructions that the disassembler does not know are
// accepted; anything else unknown (such as literal pools) refuses the
// function.
package symbols
