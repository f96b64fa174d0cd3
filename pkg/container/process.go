package container

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Runtime names the container runtime a process runs under.
type Runtime string

const (
	RuntimeNone       Runtime = ""
	RuntimeDocker     Runtime = "docker"
	RuntimeContainerd Runtime = "containerd"
	RuntimeCRIO       Runtime = "cri-o"
	RuntimePodman     Runtime = "podman"
)

// Process is a resolved tracing target as seen from the host.
type Process struct {
	PID   int // host PID
	NSPID int // PID inside its own PID namespace (last NSpid field of /proc/PID/status)
	Comm  string

	ContainerID   string // full ID, from the Docker API or /proc/PID/cgroup
	ContainerName string // when known (Docker)
	Runtime       Runtime

	// Binary opens the executable from the host: /proc/PID/root/<path inside
	// the process's root>, or /proc/PID/exe when that path does not lead to
	// the same file (deleted or replaced binary).
	Binary string

	// Dev and Inode identify the file backing the executable mapping, as
	// /proc/PID/maps shows it. On overlayfs that is the file in the image
	// layer, so a restarted container running the same image has the same
	// identity even when overlayfs reports a per-mount device for Binary
	// (it does when the layers span filesystems).
	Dev, Inode uint64
	// Size and ModTime of the executable complete its identity: device
	// numbers of tmpfs and other virtual filesystems are reused, and a new
	// mount numbers its files from the same start.
	Size    int64
	ModTime time.Time

	// StartTime is field 22 of /proc/PID/stat (clock ticks after boot): a
	// reused PID has a different one.
	StartTime uint64
}

// Same reports whether p and q are the same running process (not merely the
// same PID).
func (p Process) Same(q Process) bool {
	return p.PID == q.PID && p.StartTime == q.StartTime
}

// SameBinary reports whether p and q run the same executable file, so
// symbols read for one are valid for the other.
func (p Process) SameBinary(q Process) bool {
	return p.Inode != 0 && p.Dev == q.Dev && p.Inode == q.Inode &&
		p.Size == q.Size && p.ModTime.Equal(q.ModTime)
}

// ShortID is the 12-character container ID Docker prints.
func (p Process) ShortID() string {
	if len(p.ContainerID) > 12 {
		return p.ContainerID[:12]
	}
	return p.ContainerID
}

// String describes p in one line, e.g.
// "pid 4242 (nspid 1, cilium-agent) in docker container cilium-agent (0123456789ab)".
func (p Process) String() string {
	s := fmt.Sprintf("pid %d (nspid %d, %s)", p.PID, p.NSPID, p.Comm)
	if p.ContainerID == "" {
		return s
	}
	rt := string(p.Runtime)
	if rt == "" {
		rt = "unknown runtime"
	}
	if p.ContainerName != "" {
		return fmt.Sprintf("%s in %s container %s (%s)", s, rt, p.ContainerName, p.ShortID())
	}
	return fmt.Sprintf("%s in %s container %s", s, rt, p.ShortID())
}

// TargetColumns names the values returned by [Process.TargetRow].
var TargetColumns = []string{"PID", "NSPID", "CONTAINER", "RUNTIME", "BINARY"}

// TargetRow returns p's values for a table of targets, in the order of
// [TargetColumns]; missing values are "-".
func (p Process) TargetRow() []string {
	ctr := "-"
	switch {
	case p.ContainerName != "":
		ctr = p.ContainerName + " (" + p.ShortID() + ")"
	case p.ContainerID != "":
		ctr = p.ShortID()
	}
	rt := string(p.Runtime)
	if rt == "" {
		rt = "-"
	}
	return []string{strconv.Itoa(p.PID), strconv.Itoa(p.NSPID), ctr, rt, p.Binary}
}

const procDir = "/proc"

func procPath(pid int, name string) string {
	return filepath.Join(procDir, strconv.Itoa(pid), name)
}

// stat holds what ReadProcess and ExitStatus need from /proc/PID/stat.
type stat struct {
	comm      string
	state     byte
	flags     uint64 // PF_* flags
	startTime uint64
	exitCode  int64 // field 52, as wait(2) reports it; -1 when absent
}

// pfKthread marks kernel threads in the flags of /proc/PID/stat.
const pfKthread = 0x00200000

// parseStat parses /proc/PID/stat. comm may contain spaces and parentheses,
// so fields are counted after the last ')'.
func parseStat(b []byte) (stat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return stat{}, errors.New("malformed stat: no comm")
	}
	// Fields after comm start with field 3 (state); starttime is field 22.
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 20 {
		return stat{}, fmt.Errorf("malformed stat: %d fields after comm", len(f))
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		return stat{}, fmt.Errorf("malformed stat: flags: %w", err)
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return stat{}, fmt.Errorf("malformed stat: starttime: %w", err)
	}
	s := stat{comm: string(b[open+1 : end]), state: f[0][0], flags: flags, startTime: st, exitCode: -1}
	// exit_code exists since Linux 3.5, and ptrace access hides it.
	if len(f) >= 50 {
		if c, err := strconv.ParseInt(f[49], 10, 64); err == nil {
			s.exitCode = c
		}
	}
	return s, nil
}

// ExitStatus returns how process pid, started at startTime (field 22 of
// its stat), exited, as a shell shows it: the exit code, or 128 plus the
// signal that killed it. It is known only while the process is a zombie,
// exited but not yet reaped by its parent.
func ExitStatus(pid int, startTime uint64) (int, bool) {
	b, err := os.ReadFile(procPath(pid, "stat"))
	if err != nil {
		return 0, false
	}
	s, err := parseStat(b)
	if err != nil || s.state != 'Z' || s.startTime != startTime || s.exitCode < 0 {
		return 0, false
	}
	if sig := s.exitCode & 0x7f; sig != 0 {
		return 128 + int(sig), true
	}
	return int(s.exitCode>>8) & 0xff, true
}

// readStat reads /proc/PID/stat; a missing or exited process gives
// ErrNoProcess.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile(procPath(pid, "stat"))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return stat{}, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return stat{}, err
	}
	s, err := parseStat(b)
	if err != nil {
		return stat{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	// A zombie has no executable any more; to a tracer it is gone.
	if s.state == 'Z' || s.state == 'X' || s.state == 'x' {
		return stat{}, fmt.Errorf("pid %d: %w (state %c)", pid, ErrNoProcess, s.state)
	}
	return s, nil
}

// parseNSPID returns the last field of the NSpid line of /proc/PID/status:
// the PID in the innermost namespace.
func parseNSPID(status []byte) (int, bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "NSpid:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, false
		}
		n, err := strconv.Atoi(f[len(f)-1])
		return n, err == nil
	}
	return 0, false
}

// ReadProcess reads what /proc says of process pid: everything Process
// holds except the container name, which takes the Docker API.
func ReadProcess(pid int) (Process, error) {
	if pid <= 0 {
		return Process{}, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	st, err := readStat(pid)
	if err != nil {
		return Process{}, err
	}
	if st.flags&pfKthread != 0 {
		return Process{}, fmt.Errorf("pid %d (%s): %w", pid, st.comm, ErrNoExecutable)
	}
	p := Process{PID: pid, NSPID: pid, Comm: st.comm, StartTime: st.startTime}

	status, err := os.ReadFile(procPath(pid, "status"))
	if err != nil {
		return Process{}, vanished(pid, err)
	}
	// NSpid exists since Linux 4.1; without it the host PID is all we know.
	if n, ok := parseNSPID(status); ok {
		p.NSPID = n
	}

	cg, err := os.ReadFile(procPath(pid, "cgroup"))
	if err != nil {
		return Process{}, vanished(pid, err)
	}
	p.ContainerID, p.Runtime = ParseCgroup(cg)

	if err := p.findBinary(); err != nil {
		return Process{}, vanished(pid, err)
	}

	// The process may have exited and its PID been reused while we read.
	again, err := readStat(pid)
	if err != nil {
		return Process{}, err
	}
	if again.startTime != p.StartTime {
		return Process{}, fmt.Errorf("pid %d: %w (pid reused)", pid, ErrNoProcess)
	}
	return p, nil
}

// vanished turns "not found" while reading /proc/PID/* into ErrNoProcess
// and keeps other errors (permission: the *fs.PathError names the path).
func vanished(pid int, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	return err
}

// findBinary sets Binary, Dev and Inode.
func (p *Process) findBinary() error {
	exeLink := procPath(p.PID, "exe")
	exe, err := os.Readlink(exeLink)
	if err != nil {
		// Not a kernel thread (checked before), so the process is exiting:
		// it loses its executable before it turns zombie.
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(exeLink, &st); err != nil {
		return &fs.PathError{Op: "stat", Path: exeLink, Err: err}
	}
	p.Binary = exeLink
	p.Dev, p.Inode = st.Dev, st.Ino
	p.Size, p.ModTime = st.Size, time.Unix(st.Mtim.Unix())
	if dev, ino, ok := mappedFile(p.PID, exe); ok {
		p.Dev, p.Inode = dev, ino
	}

	// The exe link reads relative to the root of the process's mount
	// namespace, not to its chroot; /proc/PID/root names that chroot the
	// same way, so strip it to get the path inside the process's root.
	if strings.HasSuffix(exe, " (deleted)") || !filepath.IsAbs(exe) {
		return nil
	}
	root, err := os.Readlink(procPath(p.PID, "root"))
	if err != nil {
		return err
	}
	inner := exe
	if root != "/" {
		rest, ok := strings.CutPrefix(exe, root+"/")
		if !ok {
			return nil
		}
		inner = "/" + rest
	}
	cand := filepath.Join(procPath(p.PID, "root"), inner)
	var cst unix.Stat_t
	if unix.Stat(cand, &cst) == nil && cst.Dev == st.Dev && cst.Ino == st.Ino {
		p.Binary = cand
	}
	return nil
}

// mappedFile returns the device and inode /proc/PID/maps shows for the
// mapping of path: on overlayfs, the file in the lower layer.
func mappedFile(pid int, path string) (dev, ino uint64, ok bool) {
	f, err := os.Open(procPath(pid, "maps"))
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// address perms offset dev inode pathname
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || strings.Join(fields[5:], " ") != path {
			continue
		}
		maj, min, found := strings.Cut(fields[3], ":")
		if !found {
			return 0, 0, false
		}
		ma, err1 := strconv.ParseUint(maj, 16, 32)
		mi, err2 := strconv.ParseUint(min, 16, 32)
		in, err3 := strconv.ParseUint(fields[4], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || in == 0 {
			return 0, 0, false
		}
		return unix.Mkdev(uint32(ma), uint32(mi)), in, true
	}
	return 0, 0, false
}
