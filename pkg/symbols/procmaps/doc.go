// Package procmaps relates a running process's addresses to its
// executable's: it finds the mapping of the executable's text segment in
// /proc/PID/maps, told apart from other files' mappings by inode or by the
// path of /proc/PID/exe, and gives the bias between the process's program
// counters and the executable's virtual addresses (non-zero for a PIE),
// which symbolizing runtime PCs needs. Attaching probes does not: they are
// placed by file offset.
package procmaps
