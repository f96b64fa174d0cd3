// Package symbols opens Go executables and owns their function table: build
// information, the functions by name or glob (from .symtab or, in stripped
// binaries, .gopclntab), the file offsets probes attach at, the offsets of
// every RET instruction (bodies decoded by package disasm, checked against
// the compiler's pc tables), PC to function/file/line symbolization
// including inlined frames, frame sizes from the pcsp tables for unwinding,
// the executable's static itabs and the names of its types (through the
// moduledata, stripped builds too), and the initial value of [N]string
// variables such as runtime.waitReasonStrings. Like the standard library's debug packages it
// holds plain data, does no logging and treats every input binary as
// untrusted. Go 1.18 through 1.26 are read on amd64 and arm64, PIE or not,
// stripped or not, internally or externally linked; nothing is materialized
// per function: tables are read in place from a memory mapping, so opening a
// 130 MB binary and resolving a few functions costs tens of milliseconds and
// megabytes. The packages under it build on a File: disasm decodes function
// bodies, args resolves arguments and captures from DWARF, offsets carries
// them and runtime.g's goid offset to stripped builds, and procmaps relates a
// running process's addresses to the file's.
package symbols
