package kernels_test

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/kernels"
	"github.com/cilium-tracer/tracer/internal/testagent"
)

// The kernels cilium-agent v1.18 runs on (Linux >= 5.10), as Debian ships
// them for the cloud: every feature the tracer needs is built in, so the
// initramfs needs no modules. The packages are named by ABI, and Debian's
// mirror drops an old ABI some time after a newer one appears: when apt-get
// no longer finds one, name the newer build here.
var matrix = []struct {
	arch, version, pkg string
}{
	{"amd64", "5.10", "linux-image-5.10.0-43-cloud-amd64-unsigned"},
	{"amd64", "6.1", "linux-image-6.1.0-57-cloud-amd64-unsigned"},
	{"amd64", "6.12", "linux-image-6.12.117+deb12-cloud-amd64-unsigned"},
	{"arm64", "6.1", "linux-image-6.1.0-57-cloud-arm64-unsigned"},
	{"arm64", "6.12", "linux-image-6.12.117+deb12-cloud-arm64-unsigned"},
}

// preemptible are the kernels booted a second time with preempt=full
// (they are PREEMPT_DYNAMIC, PREEMPT_VOLUNTARY by default), where a BPF
// program can be preempted on its CPU.
var preemptible = map[string]bool{"amd64-6.1": true, "amd64-6.12": true}

// prebuilt is where the binaries lie in the guest; the tests find them
// through testagent.PrebuiltEnv.
const prebuilt = "/prebuilt"

// The agents the checks run, as the tests name them.
var agents = []testagent.Variant{{}, {Stripped: true}, {Stripped: true, PIE: true}}

// A check is one command the guest runs.
type check struct {
	name string
	args []string
}

// goTest runs the tests of a test binary that match run.
func goTest(name, binary, run string) check {
	return check{name, []string{prebuilt + "/" + binary, "-test.v", "-test.count=1", "-test.timeout=10m", "-test.run", run}}
}

// checks are the core checks, each an existing test of the project:
//   - pkg/session's TestTraceAgent on the stripped PIE agent: 50 goroutines
//     with exact counts per function, durations against the agent's own
//     clock, recursion, stack growth, panics reported unfinished with the
//     goroutine table empty after, a stack with the immediate caller and an
//     inlined frame;
//   - TestGoroutineReuse: goroutines ended by runtime.Goexit in a traced
//     call are reported unfinished, the goroutine table empty after;
//   - TestEveryProcess and TestEveryProcessExit: every process that runs
//     the stripped agent, PIE and not, traced from its file, with exact
//     counts per process; without attach cookies a PIE is refused;
//   - TestSyscalls: the syscall programs on raw tracepoints, sharing the
//     uprobes' goroutine table (the legacy object's too): a child process
//     and a BPF program load against the agent's own clock, netlink sends
//     and receives named, short syscalls counted;
//   - cmd/tracer's TestEntryOnly (entry-only counts), TestCaptureStripped
//     (--capture through an offsets file, on the stripped agent),
//     TestDoctor (tracer doctor's checks, capabilities and mode agree with
//     the kernel's, and it loads and attaches in that mode) and
//     TestTraceSyscalls (--breakdown's syscalls in JSON and OTLP).
//
// With preempt=full the session tests also run TestScratchPerCall, whose
// probes share per-CPU buffers that a preempted program would clobber.
func checks(preempt bool) []check {
	session := "TestTraceAgent|TestGoroutineReuse"
	if preempt {
		session += "|TestScratchPerCall"
	}
	variant := regexp.QuoteMeta(testagent.Variant{Stripped: true, PIE: true}.String())
	nonPIE := regexp.QuoteMeta(testagent.Variant{Stripped: true}.String())
	return []check{
		goTest("session", "session.test", "^("+session+")$/^"+variant+"$"),
		goTest("every-process", "session.test", "^(TestEveryProcess|TestEveryProcessExit)$/^("+variant+"|"+nonPIE+")$"),
		goTest("syscalls", "session.test", "^TestSyscalls$/^"+variant+"$"),
		goTest("cli", "tracer.test", "^(TestEntryOnly|TestCaptureStripped|TestDoctor|TestTraceSyscalls)$"),
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	testagent.Cleanup()
	os.Exit(code)
}

func TestKernels(t *testing.T) {
	cache, err := kernels.DefaultCache()
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(t *testing.T, name, arch string) string {
		t.Helper()
		dir, err := cache.Unpacked(kernels.Package{Name: name, Arch: arch})
		if err != nil {
			t.Fatal(err)
		}
		return dir
	}
	for _, m := range kernels.Machines {
		if _, err := exec.LookPath(m.Qemu); err != nil {
			t.Fatalf("%s not found: install Debian's %s (.ci/run does)", m.Qemu, m.Package)
		}
	}

	// The binaries of an architecture, by their path in the guest, built
	// when a kernel of it first boots; nil after a failed build.
	tmp := t.TempDir()
	var mu sync.Mutex
	built := map[string]map[string]string{}
	files := func(t *testing.T, arch string) map[string]string {
		mu.Lock()
		defer mu.Unlock()
		if f, ok := built[arch]; ok {
			if f == nil {
				t.Fatalf("the %s binaries did not build", arch)
			}
			return f
		}
		built[arch] = nil
		start := time.Now()
		f := binaries(t, filepath.Join(tmp, arch), arch, fetch(t, "busybox-static", arch), fetch(t, "libc6", arch))
		t.Logf("%s binaries built in %v", arch, time.Since(start).Round(time.Second))
		built[arch] = f
		return f
	}

	// Two VMs at a time (go test's -parallel is GOMAXPROCS), each on one
	// host thread for amd64, two for arm64.
	for _, k := range matrix {
		name := k.arch + "-" + k.version
		cmdlines := []string{""}
		if preemptible[name] {
			cmdlines = append(cmdlines, "preempt=full")
		}
		for _, cmdline := range cmdlines {
			sub := name
			if cmdline != "" {
				sub += "-" + strings.ReplaceAll(cmdline, "=", "-")
			}
			t.Run(sub, func(t *testing.T) {
				t.Parallel()
				image, err := filepath.Glob(filepath.Join(fetch(t, k.pkg, k.arch), "boot", "vmlinuz-*"))
				if err != nil || len(image) != 1 {
					t.Fatalf("%s: %d kernel images in boot/", k.pkg, len(image))
				}
				vm := kernels.VM{Arch: k.arch, Kernel: image[0], Cmdline: cmdline}
				boot(t, vm, files(t, k.arch), checks(cmdline != ""))
			})
		}
	}
}

// binaries builds, for arch, the static binaries the guest runs, and
// returns them by their path in the guest, with busybox and the dynamic
// loader the PIE agent asks for.
func binaries(t *testing.T, dir, arch, busybox, libc string) map[string]string {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	goCmd := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = testagent.Root()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s (%s): %v\n%s", strings.Join(args, " "), arch, err, out)
		}
	}
	// One go command for both test binaries, named session.test and
	// tracer.test after their packages, so their dependencies build once.
	goCmd("test", "-c", "-ldflags=-s -w", "-o", dir+"/", "./pkg/session", "./cmd/tracer")
	goCmd("build", "-ldflags=-s -w", "-o", filepath.Join(dir, "tracer"), "./cmd/tracer")
	files := map[string]string{"/bin/busybox": filepath.Join(busybox, "bin", "busybox")}
	for _, name := range []string{"tracer", "session.test", "tracer.test"} {
		files[prebuilt+"/"+name] = filepath.Join(dir, name)
	}
	for _, v := range agents {
		built := v
		built.GOARCH = arch
		bin := testagent.Build(t, built)
		files[testagent.Prebuilt(prebuilt, v)] = bin
		if interp := interpreter(t, bin); interp != "" {
			files[interp] = resolve(t, libc, interp)
		}
	}
	return files
}

// interpreter returns the program interpreter an executable names, "" if
// it is static.
func interpreter(t *testing.T, path string) string {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				t.Fatal(err)
			}
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return ""
}

// resolve follows symbolic links from path inside the tree at root and
// returns the host path of the file they end at.
func resolve(t *testing.T, root, path string) string {
	for range 10 {
		host := filepath.Join(root, path)
		target, err := os.Readlink(host)
		if err != nil {
			if _, err := os.Stat(host); err != nil {
				t.Fatal(err)
			}
			return host
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = target
	}
	t.Fatalf("%s: too many links under %s", path, root)
	return ""
}

// initScript mounts what the tracer uses, runs the checks between markers
// the host parses, prints the kernel log and powers off.
func initScript(checks []check) string {
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root TMPDIR=/tmp %s=%s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# The OTLP checks send spans over loopback, which a fresh kernel has down.
ip link set lo up
cd /tmp
echo "matrix: kernel $(uname -r) up $(cut -d' ' -f1 /proc/uptime)s"
`, testagent.PrebuiltEnv, prebuilt)
	for _, c := range checks {
		fmt.Fprintf(&b, "echo \"matrix: begin %s\"\nt0=$(cut -d' ' -f1 /proc/uptime)\n", c.name)
		for i, a := range c.args {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
		}
		fmt.Fprintf(&b, " 2>&1\nrc=$?\necho \"matrix: end %s exit=$rc from=$t0 to=$(cut -d' ' -f1 /proc/uptime)\"\n", c.name)
	}
	b.WriteString("echo 'matrix: dmesg'\ndmesg\necho 'matrix: done'\npoweroff -f\n")
	return b.String()
}

// A result is what the guest printed for one check.
type result struct {
	output   []string
	exit     int
	from, to float64 // the guest's uptime, in s
	ended    bool
}

var (
	endLine = regexp.MustCompile(`^matrix: end (\S+) exit=(\d+) from=([\d.]+) to=([\d.]+)$`)
	// What the kernel prints when it found itself in a state it should
	// never be in: WARN(), BUG(), an oops (arm64: "Internal error: Oops").
	alarm = regexp.MustCompile(`\b(WARNING|BUG):|\bOops\b`)
)

// boot writes the initramfs for checks, boots it, and reports each check
// as a subtest, then the kernel log.
func boot(t *testing.T, vm kernels.VM, files map[string]string, checks []check) {
	vm.Initrd = filepath.Join(t.TempDir(), "initramfs.cpio")
	f, err := os.Create(vm.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	a := kernels.NewInitramfs(f)
	for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/root"} {
		a.Dir(d)
	}
	a.CharDev("/dev/console", 5, 1)
	a.File("/init", 0o755, []byte(initScript(checks)))
	for guest, host := range files {
		a.CopyFile(guest, host)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// The guest prints at least every few seconds while it boots and
	// while the tests run verbosely; a test's own timeout inside the guest
	// (-test.timeout) prints its goroutines and ends it long before this.
	vm.Silence = 5 * time.Minute
	var (
		console []string
		results = map[string]*result{}
		cur     *result
		dmesg   []string
		inDmesg bool
		done    bool
		kernel  string
	)
	start := time.Now()
	err = vm.Run(func(l string) {
		console = append(console, l)
		// A kernel message may have begun the line.
		if i := strings.Index(l, "matrix: "); i > 0 {
			l = l[i:]
		}
		switch {
		case strings.HasPrefix(l, "matrix: kernel "):
			kernel = strings.TrimPrefix(l, "matrix: kernel ")
		case strings.HasPrefix(l, "matrix: begin "):
			cur = &result{}
			results[strings.TrimPrefix(l, "matrix: begin ")] = cur
		case endLine.MatchString(l):
			m := endLine.FindStringSubmatch(l)
			if r := results[m[1]]; r != nil {
				r.ended = true
				r.exit, _ = strconv.Atoi(m[2])
				r.from, _ = strconv.ParseFloat(m[3], 64)
				r.to, _ = strconv.ParseFloat(m[4], 64)
			}
			cur = nil
		case l == "matrix: dmesg":
			inDmesg = true
		case l == "matrix: done":
			inDmesg, done = false, true
		case inDmesg:
			dmesg = append(dmesg, l)
		case cur != nil:
			cur.output = append(cur.output, l)
		}
	})
	t.Logf("%s: %v wall time", kernel, time.Since(start).Round(time.Second))
	if err != nil || !done {
		t.Errorf("the guest did not finish (%v); its console ends:\n%s", err, tail(console, 60))
	}

	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			r := results[c.name]
			switch {
			case r == nil:
				t.Fatal("never started")
			case !r.ended:
				t.Fatalf("never ended; its output:\n%s", tail(r.output, 200))
			case r.exit != 0:
				t.Fatalf("exit %d in %.1fs; its output:\n%s", r.exit, r.to-r.from, strings.Join(r.output, "\n"))
			}
			var summary []string
			for _, l := range r.output {
				if strings.HasPrefix(strings.TrimSpace(l), "--- ") {
					summary = append(summary, l)
				}
			}
			t.Logf("%.1fs in the guest:\n%s", r.to-r.from, strings.Join(summary, "\n"))
		})
	}
	t.Run("dmesg", func(t *testing.T) {
		if len(dmesg) == 0 {
			t.Fatal("no kernel log")
		}
		for i, l := range dmesg {
			if alarm.MatchString(l) {
				t.Errorf("kernel log:\n%s", strings.Join(dmesg[i:min(i+30, len(dmesg))], "\n"))
				break
			}
		}
	})
}

// tail returns the last n lines.
func tail(lines []string, n int) string {
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
