package procmaps

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// Bias returns the difference between runtime addresses in process pid and
// f's virtual addresses: ELF vaddr = runtime PC - bias. It is 0 for non-PIE
// executables. The executable segment's mapping is found in /proc/PID/maps
// by its file offset and permissions, and told apart from other mappings by
// inode (when f was opened from a path) or by the path of /proc/PID/exe.
func Bias(f *symbols.File, pid int) (uint64, error) {
	text := f.TextSegment()
	base, err := FileBase(pid, f.Inode, text.Off)
	if err != nil {
		return 0, err
	}
	// File offset o runs at base + o, and vaddr v is at file offset
	// v - Vaddr + Off.
	return base + text.Off - text.Vaddr, nil
}

// FileBase returns where the executable mapping holding file offset off of
// process pid's executable puts file offset 0: code at file offset o of
// that mapping runs at base + o, the address a uprobe at o reports as its
// instruction pointer. inode (0: unknown) and the path of /proc/PID/exe tell
// the executable apart from other files mapped at the same offset.
func FileBase(pid int, inode, off uint64) (uint64, error) {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, err
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	exe = strings.TrimSuffix(exe, " (deleted)")
	m, err := findTextMapping(maps, off, inode, exe)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return m.start - m.offset, nil
}

type mapping struct {
	start, end, offset uint64
	perms              string
	inode              uint64
	path               string
}

func parseMaps(data []byte) []mapping {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		var m mapping
		var err1, err2, err3, err4 error
		m.start, err1 = strconv.ParseUint(lo, 16, 64)
		m.end, err2 = strconv.ParseUint(hi, 16, 64)
		m.offset, err3 = strconv.ParseUint(fields[2], 16, 64)
		m.inode, err4 = strconv.ParseUint(fields[4], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			continue
		}
		m.perms = fields[1]
		if len(fields) > 5 {
			// Paths may contain spaces; the maps format separates them from
			// the inode by padding only.
			m.path = strings.TrimSuffix(strings.Join(fields[5:], " "), " (deleted)")
		}
		out = append(out, m)
	}
	return out
}

// findTextMapping picks the executable mapping of the file's text segment.
// Candidates must be executable and map the page holding the segment's file
// offset; the inode (0: unknown), then the executable's path, settles
// between several (a process can map several binaries with equal offsets).
func findTextMapping(maps []byte, textOff, inode uint64, exe string) (mapping, error) {
	page := uint64(os.Getpagesize())
	var cands []mapping
	for _, m := range parseMaps(maps) {
		if !strings.Contains(m.perms, "x") || m.inode == 0 {
			continue
		}
		if m.offset > textOff || textOff-m.offset >= m.end-m.start || m.offset%page != 0 {
			continue
		}
		cands = append(cands, m)
	}
	pick := func(keep func(mapping) bool) []mapping {
		var out []mapping
		for _, m := range cands {
			if keep(m) {
				out = append(out, m)
			}
		}
		return out
	}
	if inode != 0 {
		if byInode := pick(func(m mapping) bool { return m.inode == inode }); len(byInode) > 0 {
			cands = byInode
		}
	}
	if len(cands) > 1 && exe != "" {
		if byPath := pick(func(m mapping) bool { return m.path == exe }); len(byPath) > 0 {
			cands = byPath
		}
	}
	switch len(cands) {
	case 0:
		return mapping{}, fmt.Errorf("executable not mapped")
	case 1:
		return cands[0], nil
	}
	return mapping{}, fmt.Errorf("%d candidate mappings of the executable", len(cands))
}
