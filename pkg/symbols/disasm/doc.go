// Package disasm decodes the machine code of one Go function body on amd64
// and arm64 (with golang.org/x/arch): where its instructions start, its RET
// instructions, and its direct jumps and calls out of the body. A body is
// decoded completely or refused with a *DecodeError, since a probe placed
// off an instruction boundary corrupts the target: on amd64 that refuses
// VEX/EVEX-encoded (AVX) instructions, which golang.org/x/arch decodes with
// wrong lengths in some cases (Go emits them only in assembly and with
// GOAMD64=v3 or later); on arm64, whose instructions are fixed-width, LSE
// atomics and system instructions the disassembler does not know are
// accepted, and anything else unknown (such as a literal pool) refuses the
// body. It knows nothing of executables: package symbols reads the bodies
// and checks what is found here against the compiler's pc tables.
package disasm
