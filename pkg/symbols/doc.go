// Package symbols reads Go executables: build information, the function
// table (from .symtab or, in stripped binaries, .gopclntab), file offsets for
// attaching probes, the offsets of every RET instruction, and PC to
// function/file/line symbolization including inlined frames.
//
// Like the standard library's debug packages it holds plain data, does no
// logging and treats every input binary as untrusted.
package symbols
