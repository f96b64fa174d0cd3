package ciliumlab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config is one lab.
type Config struct {
	Binaries *Binaries
	Stripped bool      // run the stripped agent, as releases ship it
	Pods     int       // endpoints created through cilium-cni, besides host and health
	Log      io.Writer // progress, one line per step
}

// Lab is a running cilium-agent with etcd and pods, in namespaces of its
// own: network (a veth pair as eth0, no link to the host), mount (private
// /run, bpffs and cgroup2, and plain files over the two host-wide sysctls
// the agent writes), PID (everything dies with its init) and cgroup (its
// own cgroup as the agent's cgroup root, so nothing it attaches there
// reaches the host's processes).
type Lab struct {
	cfg    Config
	dir    string // on the host: the agent's log
	cgroup string // the lab's cgroup v2 directory on the host
	sysctl map[string]string
	closed chan struct{} // closed by Close: ends the threads that forked the lab's processes
	once   sync.Once

	init     *exec.Cmd // unshare, whose child is the namespaces' init
	initPID  int       // host PID of that init
	agent    *exec.Cmd // nsenter, whose child is the agent
	agentPID int
	agentLog *os.File

	Pods  []Pod
	debug bool // the pods' Debug option, flipped by Regenerate
}

// Pod is an endpoint created through the real CNI plugin.
type Pod struct {
	Name       string
	Netns      string // inside the lab's mount namespace
	Container  string
	EndpointID uint16
}

// hostSysctls are the host-wide settings cilium-agent writes at start; the
// lab bind-mounts files over them, and Close checks they are unchanged.
var hostSysctls = []string{
	"/proc/sys/kernel/unprivileged_bpf_disabled",
	"/proc/sys/kernel/timer_migration",
	"/proc/sys/net/core/bpf_jit_enable",
	"/proc/sys/net/core/bpf_jit_harden",
	"/proc/sys/net/core/bpf_jit_kallsyms",
}

const (
	cgroupPrefix = "tracer-ciliumlab-"
	metricsAddr  = "127.0.0.1:9962"
	// The pods' addresses come from --ipv4-range; eth0 is outside it.
	podRange = "10.200.0.0/24"
	nodeAddr = "10.201.0.1/24"
)

// initScript runs as PID 1 of the lab's namespaces. The agent is started
// separately (Lab.StartAgent), so that it can be restarted while etcd and
// the pods' network namespaces stay.
const initScript = `set -e
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netns /run/cilium /run/etcd /run/lab /run/cgroup2
# The agent refuses a bpffs stacked on the host's: replace it, in this
# mount namespace only.
while mountpoint -q /sys/fs/bpf; do umount -l /sys/fs/bpf; done
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 none /run/cgroup2
for f in unprivileged_bpf_disabled timer_migration; do
	cat /proc/sys/kernel/$f > /run/lab/$f
	mount --bind /run/lab/$f /proc/sys/kernel/$f
done
ip link set lo up
ip link add eth0 type veth peer name eth0-peer
ip addr add ` + nodeAddr + ` dev eth0
ip link set eth0 up
ip link set eth0-peer up
etcd --name lab --data-dir /run/etcd \
	--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster lab=http://127.0.0.1:2380 >/run/lab/etcd.log 2>&1 &
touch /run/lab/ready
exec sleep infinity
`

// Start starts the lab: namespaces, etcd, the agent, and cfg.Pods pods
// labelled app=web. On error everything started is torn down.
func Start(ctx context.Context, cfg Config) (l *Lab, err error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	// cilium v1.17 also runs bpftool to probe the kernel, and exits
	// without it.
	for _, tool := range []string{"unshare", "nsenter", "ip", "etcd", "bpftool"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("the cilium lab needs %s (Debian: util-linux, iproute2, etcd-server, bpftool)", tool)
		}
	}
	l = &Lab{cfg: cfg, sysctl: map[string]string{}, closed: make(chan struct{})}
	for _, p := range hostSysctls {
		if b, err := os.ReadFile(p); err == nil {
			l.sysctl[p] = string(b)
		}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
			l = nil
		}
	}()
	if l.dir, err = os.MkdirTemp("", "ciliumlab"); err != nil {
		return l, err
	}
	if err := l.makeCgroup(); err != nil {
		return l, err
	}
	if err := l.startInit(ctx); err != nil {
		return l, err
	}
	if err := l.StartAgent(ctx); err != nil {
		return l, err
	}
	for i := range cfg.Pods {
		if err := l.addPod(ctx, fmt.Sprintf("pod%d", i+1)); err != nil {
			return l, err
		}
	}
	if err := l.WaitQuiet(ctx); err != nil {
		return l, err
	}
	return l, nil
}

// makeCgroup makes the lab's cgroup, first removing empty ones that a
// killed earlier run left.
func (l *Lab) makeCgroup() error {
	root, err := cgroup2Root()
	if err != nil {
		return err
	}
	if stale, _ := filepath.Glob(filepath.Join(root, cgroupPrefix+"*")); len(stale) > 0 {
		for _, d := range stale {
			if procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil && len(procs) == 0 {
				os.Remove(d)
			}
		}
	}
	l.cgroup = filepath.Join(root, cgroupPrefix+strconv.Itoa(os.Getpid())+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	return os.Mkdir(l.cgroup, 0o755)
}

// cgroup2Root finds where the cgroup v2 hierarchy is mounted: at
// /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones.
func cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				return fields[4], nil
			}
		}
	}
	return "", errors.New("the cilium lab needs a cgroup v2 hierarchy mounted on the host")
}

// start starts cmd inside the lab's cgroup from its first instruction, and
// has the kernel kill it if the test process dies (Pdeathsig). The kernel
// sends that signal when the thread that forked it exits, and Go ends
// threads of its own accord (a goroutine that exits locked to its thread),
// so the fork is done from a thread kept, locked, until Close.
func (l *Lab) start(cmd *exec.Cmd) error {
	fd, err := syscall.Open(l.cgroup, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Pdeathsig: syscall.SIGKILL}
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		started <- cmd.Start()
		<-l.closed
	}()
	return <-started
}

func (l *Lab) startInit(ctx context.Context) error {
	// --kill-child: if unshare dies (and it dies with the test process,
	// by Pdeathsig), the namespaces' init dies, and with it every process
	// of the PID namespace.
	cmd := exec.Command("unshare", "--kill-child=SIGKILL", "--fork", "--pid", "--mount-proc",
		"--net", "--cgroup", "--propagation", "private", "--", "sh", "-c", initScript)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := l.start(cmd); err != nil {
		return fmt.Errorf("start the lab's namespaces: %w", err)
	}
	l.init = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if l.initPID == 0 {
			l.initPID = child(cmd.Process.Pid)
		}
		if l.initPID != 0 {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/run/lab/ready", l.initPID)); err == nil {
				break
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("the lab's namespaces did not start: %s", strings.TrimSpace(out.String()))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the lab's namespaces did not start in 30s: %s", out.String())
		}
	}
	fmt.Fprintf(l.cfg.Log, "ciliumlab: namespaces up (init PID %d, cgroup %s)\n", l.initPID, l.cgroup)
	return nil
}

// child returns the first child of pid, 0 if none yet.
func child(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// nsenter returns a command that runs argv inside the lab's namespaces.
// The PID namespace too: its /proc has no /proc/self for a process outside.
func (l *Lab) nsenter(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--target", strconv.Itoa(l.initPID), "--pid", "--net", "--mount", "--"}, argv...)...)
}

// AgentArgs are the flags that run cilium-agent without Kubernetes, with
// identities in etcd, native routing on the lab's eth0, and nothing that
// would need the host's iptables or a kube-proxy.
func (l *Lab) AgentArgs() []string {
	return []string{
		"--enable-k8s=false",
		"--identity-allocation-mode=kvstore", "--kvstore=etcd", "--kvstore-opt=etcd.address=http://127.0.0.1:2379",
		"--ipam=kubernetes", "--ipv4-range=" + podRange, "--enable-ipv6=false",
		"--routing-mode=native", "--ipv4-native-routing-cidr=10.200.0.0/16", "--devices=eth0",
		"--install-iptables-rules=false", "--enable-ipv4-masquerade=false", "--kube-proxy-replacement=false",
		"--bpf-lb-sock=false", "--enable-l7-proxy=false", "--enable-hubble=false",
		"--lib-dir=" + l.cfg.Binaries.LibDir, "--state-dir=/run/cilium", "--bpf-root=/sys/fs/bpf",
		"--cgroup-root=/run/cgroup2", "--prometheus-serve-addr=" + metricsAddr,
		// Debug logs one line per completed regeneration, with its
		// endpoint and total time: the per-endpoint ground truth.
		"--log-opt=level=debug",
	}
}

// AgentBinary is the executable the lab runs.
func (l *Lab) AgentBinary() string {
	if l.cfg.Stripped {
		return l.cfg.Binaries.AgentStripped
	}
	return l.cfg.Binaries.Agent
}

// StartAgent starts cilium-agent in the lab and waits until its API, host
// and health endpoints are up. After a restart the agent restores the
// endpoints it had from its state directory.
func (l *Lab) StartAgent(ctx context.Context) error {
	if l.agentLog == nil {
		f, err := os.OpenFile(filepath.Join(l.dir, "cilium-agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		l.agentLog = f
	}
	argv := append([]string{"nsenter", "--target", strconv.Itoa(l.initPID), "--pid", "--net", "--mount", "--cgroup", "--",
		"env", "PATH=" + l.cfg.Binaries.PathDir + ":/usr/sbin:/usr/bin:/sbin:/bin", l.AgentBinary()}, l.AgentArgs()...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = l.agentLog, l.agentLog
	if err := l.start(cmd); err != nil {
		return fmt.Errorf("start cilium-agent: %w", err)
	}
	l.agent = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	start := time.Now()
	l.agentPID = 0
	for {
		if l.agentPID == 0 {
			// nsenter forks into the PID namespace; "env" then
			// execs the agent in the same process.
			l.agentPID = child(cmd.Process.Pid)
		}
		if l.agentPID != 0 && l.ready(ctx) {
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("cilium-agent exited at start (%s): %s", cmd.ProcessState, l.LogTail(20))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(start) > 3*time.Minute {
			return fmt.Errorf("cilium-agent not ready in 3 minutes: %s", l.LogTail(20))
		}
	}
	fmt.Fprintf(l.cfg.Log, "ciliumlab: cilium-agent %s ready in %s (PID %d, %s)\n", l.cfg.Binaries.Version,
		time.Since(start).Round(100*time.Millisecond), l.agentPID, l.AgentBinary())
	return nil
}

// ready is true when the host and health endpoints are ready.
func (l *Lab) ready(ctx context.Context) bool {
	eps, err := l.Endpoints(ctx)
	if err != nil {
		return false
	}
	host, health := false, false
	for _, e := range eps {
		host = host || e.Host() && e.State == "ready"
		health = health || e.Health() && e.State == "ready"
	}
	return host && health
}

// StopAgent stops the agent with SIGTERM, as a pod deletion does.
func (l *Lab) StopAgent() error {
	if l.agent == nil {
		return nil
	}
	if l.agentPID != 0 {
		syscall.Kill(l.agentPID, syscall.SIGTERM)
	}
	done := make(chan struct{})
	go func() {
		for l.agentPID != 0 && syscall.Kill(l.agentPID, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		syscall.Kill(l.agentPID, syscall.SIGKILL)
		<-done
	}
	l.agent = nil
	return nil
}

// Binaries is what the lab runs.
func (l *Lab) Binaries() *Binaries { return l.cfg.Binaries }

// AgentPID is the agent's PID on the host.
func (l *Lab) AgentPID() int { return l.agentPID }

// LogPath is the agent's log on the host.
func (l *Lab) LogPath() string { return filepath.Join(l.dir, "cilium-agent.log") }

// LogTail returns the last n lines of the agent's log.
func (l *Lab) LogTail(n int) string {
	b, _ := os.ReadFile(l.LogPath())
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Dbg runs cilium-dbg in the lab and returns its standard output.
func (l *Lab) Dbg(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := l.nsenter(ctx, append([]string{l.cfg.Binaries.Dbg}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("cilium-dbg %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// addPod creates a network namespace and runs the real cilium-cni ADD on
// it, as a container runtime does, then labels the endpoint app=web so it
// leaves reserved:init.
func (l *Lab) addPod(ctx context.Context, name string) error {
	p := Pod{Name: name, Netns: "/run/netns/" + name, Container: "ciliumlab-" + name}
	if out, err := l.nsenter(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	cmd := l.nsenter(ctx, "env",
		"CNI_COMMAND=ADD", "CNI_CONTAINERID="+p.Container, "CNI_NETNS="+p.Netns, "CNI_IFNAME=eth0",
		"CNI_PATH="+l.cfg.Binaries.Dir, "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME="+name,
		"CILIUM_SOCK=/run/cilium/cilium.sock", l.cfg.Binaries.CNI)
	cmd.Stdin = strings.NewReader(`{"cniVersion":"0.3.1","name":"cilium","type":"cilium-cni"}`)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cilium-cni ADD %s: %w: %s", name, err, out)
	}
	eps, err := l.Endpoints(ctx)
	if err != nil {
		return err
	}
	for _, e := range eps {
		if e.Container() == p.Container {
			p.EndpointID = e.ID
		}
	}
	if p.EndpointID == 0 {
		return fmt.Errorf("cilium-cni ADD %s: no endpoint has container %s", name, p.Container)
	}
	id := strconv.Itoa(int(p.EndpointID))
	if _, err := l.Dbg(ctx, "endpoint", "labels", id, "-a", "app=web"); err != nil {
		return err
	}
	if _, err := l.Dbg(ctx, "endpoint", "labels", id, "-d", "reserved:init"); err != nil {
		return err
	}
	l.Pods = append(l.Pods, p)
	fmt.Fprintf(l.cfg.Log, "ciliumlab: pod %s is endpoint %d\n", name, p.EndpointID)
	return nil
}

// Close stops everything the lab started and removes its cgroup, then
// checks that nothing is left: no process, no cgroup, the host's sysctls as
// they were. It is safe to call more than once.
func (l *Lab) Close() error {
	l.once.Do(func() { close(l.closed) })
	if l.agentLog != nil {
		defer l.agentLog.Close()
	}
	if l.dir != "" {
		defer os.RemoveAll(l.dir)
	}
	if l.cgroup != "" {
		// Every process of the lab is in its cgroup: the init, etcd, the
		// agent and what it runs (clang, the health responder).
		os.WriteFile(filepath.Join(l.cgroup, "cgroup.kill"), []byte("1"), 0)
	}
	if l.init != nil && l.init.Process != nil {
		l.init.Process.Kill()
	}
	var errs []error
	if l.cgroup != "" {
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := os.Remove(l.cgroup)
			if err == nil || os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				procs, _ := os.ReadFile(filepath.Join(l.cgroup, "cgroup.procs"))
				errs = append(errs, fmt.Errorf("cgroup %s not removed: %v; processes left: %s", l.cgroup, err, strings.Fields(string(procs))))
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	errs = append(errs, l.leftovers()...)
	return errors.Join(errs...)
}

// leftovers lists what the lab would have left on the host besides its
// cgroup. No process is among them once the cgroup is gone: every process
// of the lab started in it, and so did all they started.
func (l *Lab) leftovers() []error {
	var errs []error
	for p, was := range l.sysctl {
		if now, err := os.ReadFile(p); err == nil && string(now) != was {
			errs = append(errs, fmt.Errorf("host sysctl %s changed from %q to %q", p, strings.TrimSpace(was), strings.TrimSpace(string(now))))
		}
	}
	return errs
}

// Processes lists the PIDs of running processes whose executable is one of
// these binaries (the agent, the CNI plugin, cilium-dbg, the health
// responder).
func (b *Binaries) Processes() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil && strings.HasPrefix(exe, b.Dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}
