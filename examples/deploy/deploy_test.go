// Package deploy_test checks the docker-compose and Kubernetes deployments:
// their files against each other, the Grafana provisioning and the daemon's
// configuration format, and, with the real Docker engine, that the images
// build from scratch and that the privileges the deployments grant are
// enough to trace a containerized agent and no more than that.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8sjson "sigs.k8s.io/json"
	k8syaml "sigs.k8s.io/yaml"

	"github.com/cilium-tracer/tracer/pkg/daemon"
)

const (
	composeFile    = "docker-compose/docker-compose.yaml"
	prometheusFile = "docker-compose/prometheus.yaml"
	k8sFile        = "kubernetes/tracer.yaml"

	grafanaDir       = "../grafana"
	datasourcesFile  = "../grafana/provisioning/datasources/clickhouse.yaml"
	dashboardsFile   = "../grafana/provisioning/dashboards/dashboards.yaml"
	dashboardJSON    = "../grafana/dashboards/cilium-agent-internals.json"
	regenerateBPF    = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF"
	containerTimeout = 2 * time.Minute
)

// loadCompose loads the compose file with compose's own loader, which
// validates it against the Compose Specification schema and interpolates
// variables from env (here: none but those given, so defaults apply).
func loadCompose(t *testing.T, env ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{composeFile}, cli.WithName("cilium-tracer"), cli.WithEnv(env))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return p
}

// volumes maps each mount target of a service to its absolute source.
func volumes(s types.ServiceConfig) map[string]string {
	m := map[string]string{}
	for _, v := range s.Volumes {
		m[v.Target] = v.Source
	}
	return m
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// configFlag returns the value of --config in args.
func configFlag(t *testing.T, args []string) string {
	t.Helper()
	i := slices.Index(args, "--config")
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("command %q has no --config FILE", args)
	}
	return args[i+1]
}

// tracerCaps are the capabilities a tracer container may hold: uprobes
// need SYS_ADMIN since the fix for CVE-2025-38466 (BPF and PERFMON on older
// kernels), reading another container's /proc/PID/root needs SYS_PTRACE.
var tracerCaps = []string{"BPF", "PERFMON", "SYS_PTRACE", "SYS_ADMIN"}

func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"cilium-agent", "tracer", "clickhouse", "grafana", "prometheus"} {
		if _, ok := p.Services[name]; !ok {
			t.Fatalf("%s: no service %s", composeFile, name)
		}
	}
	if got := p.Services["cilium-agent"].ContainerName; got != "cilium-agent" {
		t.Errorf("agent container_name %q, want cilium-agent as in the source document", got)
	}

	tr := p.Services["tracer"]
	if tr.Pid != "host" {
		t.Errorf("tracer pid %q, want host", tr.Pid)
	}
	if tr.Privileged {
		t.Error("tracer is privileged")
	}
	if !slices.Equal(tr.CapDrop, []string{"ALL"}) {
		t.Errorf("tracer cap_drop %v, want [ALL]", tr.CapDrop)
	}
	for _, c := range tr.CapAdd {
		if !slices.Contains(tracerCaps, c) {
			t.Errorf("tracer cap_add %s: not needed (allowed: %v)", c, tracerCaps)
		}
	}
	if !slices.Contains(tr.CapAdd, "SYS_PTRACE") {
		t.Errorf("tracer cap_add %v lacks SYS_PTRACE", tr.CapAdd)
	}
	if !tr.ReadOnly {
		t.Error("tracer root file system is writable")
	}
	for _, o := range tr.SecurityOpt {
		if strings.HasPrefix(o, "seccomp") {
			t.Errorf("tracer security_opt %s: Docker's default seccomp profile is enough with SYS_ADMIN", o)
		}
	}
	for target, src := range volumes(tr) {
		if strings.Contains(src, "docker.sock") || strings.Contains(target, "docker.sock") {
			t.Errorf("tracer mounts the Docker socket (%s)", src)
		}
	}
	cfgPath := configFlag(t, tr.Command)
	src, ok := volumes(tr)[cfgPath]
	if !ok {
		t.Fatalf("tracer --config %s is not mounted", cfgPath)
	}
	cfg, err := daemon.Load(src)
	if err != nil {
		t.Fatalf("tracer config: %v", err)
	}
	if cfg.Target.Process != p.Services["cilium-agent"].ContainerName && cfg.Target.Container == "" {
		t.Errorf("daemon target %+v does not name the agent", cfg.Target)
	}

	// The daemon writes where Grafana reads.
	var ds struct {
		Datasources []struct {
			Type     string         `yaml:"type"`
			URL      string         `yaml:"url"`
			JSONData map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	readYAML(t, datasourcesFile, &ds)
	gr := p.Services["grafana"]
	env := func(k string) string {
		if v := gr.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	expandEnv := func(s string) string { return os.Expand(s, env) }
	var chHost, promURL string
	for _, d := range ds.Datasources {
		switch d.Type {
		case "grafana-clickhouse-datasource":
			chHost = expandEnv(fmt.Sprint(d.JSONData["host"]))
		case "prometheus":
			promURL = expandEnv(d.URL)
		}
	}
	for _, e := range cfg.Exporters {
		if ch := e.ClickHouse; ch != nil {
			if len(ch.Addrs) != 1 || !strings.HasPrefix(ch.Addrs[0], chHost+":") {
				t.Errorf("daemon writes to %v, Grafana reads %s", ch.Addrs, chHost)
			}
			if _, ok := p.Services[chHost]; !ok {
				t.Errorf("ClickHouse host %q is not a service", chHost)
			}
		}
	}
	if !strings.HasPrefix(promURL, "http://prometheus:") {
		t.Errorf("Prometheus datasource URL %q is not the prometheus service", promURL)
	}
	var raw any
	readYAML(t, datasourcesFile, &raw)
	for _, v := range stringValues(raw) {
		for _, m := range regexp.MustCompile(`\$\{?([A-Z_]+)\}?`).FindAllStringSubmatch(v, -1) {
			if env(m[1]) == "" {
				t.Errorf("%s uses $%s, which the grafana service does not set", datasourcesFile, m[1])
			}
		}
	}
	if !strings.Contains(env("GF_INSTALL_PLUGINS"), "grafana-clickhouse-datasource") {
		t.Error("grafana does not install grafana-clickhouse-datasource")
	}

	// Grafana's mounts are the provisioning and the dashboards, at the path
	// the dashboard provider reads.
	var prov struct {
		Providers []struct {
			Options struct{ Path string } `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, dashboardsFile, &prov)
	gv := volumes(gr)
	for target, want := range map[string]string{
		"/etc/grafana/provisioning":    filepath.Join(grafanaDir, "provisioning"),
		prov.Providers[0].Options.Path: filepath.Join(grafanaDir, "dashboards"),
	} {
		src, ok := gv[target]
		if !ok {
			t.Errorf("grafana does not mount %s", target)
			continue
		}
		if abs, _ := filepath.Abs(want); src != abs {
			t.Errorf("grafana mounts %s at %s, want %s", src, target, abs)
		}
	}

	// Prometheus scrapes the port the daemon listens on.
	var prom struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct{ Targets []string } `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, prometheusFile, &prom)
	_, port, err := net.SplitHostPort(cfg.Metrics.Listen)
	if err != nil {
		t.Fatal(err)
	}
	if len(prom.ScrapeConfigs) != 1 || len(prom.ScrapeConfigs[0].StaticConfigs) != 1 ||
		!slices.Equal(prom.ScrapeConfigs[0].StaticConfigs[0].Targets, []string{"tracer:" + port}) {
		t.Errorf("prometheus scrapes %+v, want tracer:%s", prom.ScrapeConfigs, port)
	}
}

// stringValues returns every string in a decoded YAML document.
func stringValues(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case map[string]any:
		var s []string
		for _, x := range v {
			s = append(s, stringValues(x)...)
		}
		return s
	case []any:
		var s []string
		for _, x := range v {
			s = append(s, stringValues(x)...)
		}
		return s
	}
	return nil
}

// k8sObjects are the manifest's objects, decoded strictly into the
// Kubernetes API types: an unknown, misspelled or duplicated field is an
// error.
type k8sObjects struct {
	DaemonSet      *appsv1.DaemonSet
	ServiceAccount *corev1.ServiceAccount
	ConfigMap      *corev1.ConfigMap
	Namespace      *corev1.Namespace
}

func loadK8s(t *testing.T) k8sObjects {
	t.Helper()
	b, err := os.ReadFile(k8sFile)
	if err != nil {
		t.Fatal(err)
	}
	var objs k8sObjects
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc any
		err := dec.Decode(&doc)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", k8sFile, err)
		}
		raw, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		var meta metav1.TypeMeta
		if err := k8syaml.Unmarshal(raw, &meta); err != nil {
			t.Fatalf("%s: %v", k8sFile, err)
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 DaemonSet":
			objs.DaemonSet = &appsv1.DaemonSet{}
			obj = objs.DaemonSet
		case "v1 ServiceAccount":
			objs.ServiceAccount = &corev1.ServiceAccount{}
			obj = objs.ServiceAccount
		case "v1 ConfigMap":
			objs.ConfigMap = &corev1.ConfigMap{}
			obj = objs.ConfigMap
		case "v1 Namespace":
			objs.Namespace = &corev1.Namespace{}
			obj = objs.Namespace
		default:
			t.Fatalf("%s: unexpected %s %s", k8sFile, meta.APIVersion, meta.Kind)
		}
		// Case-sensitive and strict, as the API server decodes.
		j, err := k8syaml.YAMLToJSON(raw)
		if err != nil {
			t.Fatal(err)
		}
		strict, err := k8sjson.UnmarshalStrict(j, obj, k8sjson.DisallowDuplicateFields, k8sjson.DisallowUnknownFields)
		if err != nil || len(strict) > 0 {
			t.Fatalf("%s: %s: %v %v", k8sFile, meta.Kind, err, strict)
		}
	}
	if objs.DaemonSet == nil || objs.ServiceAccount == nil || objs.ConfigMap == nil || objs.Namespace == nil {
		t.Fatalf("%s: want a Namespace, ServiceAccount, ConfigMap and DaemonSet", k8sFile)
	}
	return objs
}

func TestKubernetesDaemonSet(t *testing.T) {
	objs := loadK8s(t)
	ds, sa, cm := objs.DaemonSet, objs.ServiceAccount, objs.ConfigMap
	for _, m := range []metav1.ObjectMeta{ds.ObjectMeta, sa.ObjectMeta, cm.ObjectMeta} {
		if m.Namespace != objs.Namespace.Name {
			t.Errorf("%s is in namespace %q, not the manifest's %s", m.Name, m.Namespace, objs.Namespace.Name)
		}
	}
	if sel := ds.Spec.Selector; sel == nil || !labels.SelectorFromSet(sel.MatchLabels).Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Error("the DaemonSet's selector does not select its pods")
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostPID {
		t.Error("hostPID is not true")
	}
	if pod.HostNetwork || pod.HostIPC {
		t.Error("hostNetwork or hostIPC: not needed")
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s mounts a host path: not needed", v.Name)
		}
	}
	if pod.ServiceAccountName != sa.Name {
		t.Errorf("serviceAccountName %q does not name the manifest's ServiceAccount", pod.ServiceAccountName)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod mounts an API token it never uses")
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	}) {
		t.Error("no toleration of every taint: the tracer would not run on tainted nodes that run cilium")
	}
	var aff []corev1.PodAffinityTerm
	if pod.Affinity != nil && pod.Affinity.PodAffinity != nil {
		aff = pod.Affinity.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	}
	if len(aff) != 1 || aff[0].TopologyKey != "kubernetes.io/hostname" || aff[0].LabelSelector == nil ||
		aff[0].LabelSelector.MatchLabels["k8s-app"] != "cilium" || !slices.Equal(aff[0].Namespaces, []string{"kube-system"}) {
		t.Errorf("pod affinity %+v: want the nodes of kube-system's k8s-app=cilium pods", aff)
	}

	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no securityContext with capabilities")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged: true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	for _, want := range []corev1.Capability{"BPF", "PERFMON", "SYS_PTRACE"} {
		if !slices.Contains(sc.Capabilities.Add, want) {
			t.Errorf("capabilities.add %v lacks %s", sc.Capabilities.Add, want)
		}
	}
	for _, c := range sc.Capabilities.Add {
		if !slices.Contains(tracerCaps, string(c)) {
			t.Errorf("capabilities.add %s: not needed (allowed: %v)", c, tracerCaps)
		}
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %+v: the runtime's default profile is enough with SYS_ADMIN", sc.SeccompProfile)
	}
	if c.Resources.Limits.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources.limits %v: want cpu and memory", c.Resources.Limits)
	}
	if c.LivenessProbe != nil {
		t.Error("a liveness probe would restart the daemon, re-attaching every uprobe in the agent")
	}

	// The config the container reads is the ConfigMap's, and it is valid.
	cfgPath := configFlag(t, c.Args)
	var key string
	for _, m := range c.VolumeMounts {
		if m.MountPath != cfgPath {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm.Name {
				key = m.SubPath
			}
		}
	}
	data, ok := cm.Data[key]
	if key == "" || !ok {
		t.Fatalf("--config %s is not a key of ConfigMap %s", cfgPath, cm.Name)
	}
	cfg, err := daemon.Parse("ConfigMap "+cm.Name, []byte(data))
	if err != nil {
		t.Fatalf("daemon config: %v", err)
	}
	_, port, err := net.SplitHostPort(cfg.Metrics.Listen)
	if err != nil || !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return strconv.Itoa(int(p.ContainerPort)) == port }) {
		t.Errorf("the daemon serves metrics on %s, the container declares ports %+v", cfg.Metrics.Listen, c.Ports)
	}
	if ds.Spec.Template.Annotations["prometheus.io/port"] != port {
		t.Errorf("prometheus.io/port %q, the daemon listens on %s", ds.Spec.Template.Annotations["prometheus.io/port"], port)
	}
}

var (
	buildOnce sync.Once
	tag       string
	buildErr  error
)

// images builds both images once per test binary with build-images.sh, as
// a user would, under a tag of their own.
func images(t *testing.T) (tracer, agent string) {
	t.Helper()
	buildOnce.Do(func() {
		tag = "test-" + randHex(4)
		cmd := exec.Command("./build-images.sh")
		cmd.Env = append(os.Environ(), "TAG="+tag)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build-images.sh: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return "cilium-tracer/tracer:" + tag, "cilium-tracer/example-agent:" + tag
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tag != "" {
		exec.Command("docker", "rmi", "-f", "cilium-tracer/tracer:"+tag, "cilium-tracer/example-agent:"+tag).Run()
	}
	os.Exit(code)
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), containerTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestImages(t *testing.T) {
	tracer, agent := images(t)
	for _, img := range []string{tracer, agent} {
		var inspect []struct {
			Config struct{ Entrypoint []string }
			RootFS struct{ Layers []string }
		}
		if err := json.Unmarshal([]byte(docker(t, "image", "inspect", img)), &inspect); err != nil {
			t.Fatal(err)
		}
		if len(inspect) != 1 || len(inspect[0].RootFS.Layers) != 1 {
			t.Errorf("%s: %d layers, want the binary alone (FROM scratch)", img, len(inspect[0].RootFS.Layers))
		}
	}
	help := docker(t, "run", "--rm", "--pull", "never", tracer, "--help")
	for _, cmd := range []string{"daemon", "trace", "symbols"} {
		if !regexp.MustCompile(`(?m)^\s+` + cmd + `\s`).MatchString(help) {
			t.Errorf("tracer --help does not list %s:\n%s", cmd, help)
		}
	}
	out := docker(t, "run", "--rm", "--pull", "never", "--network", "none", agent, "-workers", "0", "-hot", "1000")
	if !strings.Contains(out, "hot calls=1000") || !strings.Contains(out, `"checksum"`) {
		t.Errorf("agent image output:\n%s", out)
	}
}

// startAgent runs the agent image like the compose file does, plus
// NET_ADMIN: like the real cilium-agent it holds a capability the tracer
// does not, so reading its /proc/PID/root takes CAP_SYS_PTRACE.
func startAgent(t *testing.T, image string) int {
	t.Helper()
	name := "deploy-test-agent-" + randHex(4)
	docker(t, "run", "-d", "--pull", "never", "--name", name, "--read-only", "--network", "none",
		"--cap-drop", "ALL", "--cap-add", "NET_ADMIN", image, "-workers", "4", "-interval", "50ms")
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	pid, err := strconv.Atoi(docker(t, "inspect", "-f", "{{.State.Pid}}", name))
	if err != nil || pid == 0 {
		t.Fatalf("agent pid: %v", err)
	}
	return pid
}

// runArgs translates the compose tracer service's isolation settings into
// docker run flags: what `docker compose up` passes for them. Settings it
// does not translate make the test fail, so it cannot fall behind.
func runArgs(t *testing.T, s types.ServiceConfig) []string {
	t.Helper()
	args := []string{"--pull", "never"}
	if s.Pid != "" {
		args = append(args, "--pid", s.Pid)
	}
	for _, c := range s.CapDrop {
		args = append(args, "--cap-drop", c)
	}
	for _, c := range s.CapAdd {
		args = append(args, "--cap-add", c)
	}
	for _, o := range s.SecurityOpt {
		args = append(args, "--security-opt", o)
	}
	if s.ReadOnly {
		args = append(args, "--read-only")
	}
	if s.Privileged {
		args = append(args, "--privileged")
	}
	if s.Hostname != "" {
		args = append(args, "--hostname", s.Hostname)
	}
	if s.User != "" || s.Ipc != "" || s.Uts != "" || s.UserNSMode != "" || s.CgroupParent != "" ||
		len(s.Devices) > 0 || len(s.Sysctls) > 0 || len(s.DeviceCgroupRules) > 0 || s.NetworkMode == "host" {
		t.Fatalf("tracer service: isolation settings this test does not translate: %+v", s)
	}
	return args
}

// calls returns the calls column of a function in tracer trace's summary.
func calls(summary, fn string) int {
	sc := bufio.NewScanner(strings.NewReader(summary))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 1 && f[len(f)-1] == fn {
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	return 0
}

// TestComposeTracerPrivileges traces the agent from a tracer container
// holding exactly the compose file's privileges.
func TestComposeTracerPrivileges(t *testing.T) {
	tracer, agent := images(t)
	pid := startAgent(t, agent)
	args := append([]string{"run", "--rm"}, runArgs(t, loadCompose(t).Services["tracer"])...)
	args = append(args, tracer, "trace", "--pid", strconv.Itoa(pid), "--duration", "3s", "--output", "none", "--func", regenerateBPF)
	out := docker(t, args...)
	if n := calls(out, regenerateBPF); n == 0 {
		t.Fatalf("the tracer container with the compose file's privileges traced no call:\n%s", out)
	}
}

// TestKubernetesCapabilities runs the tracer on the host with exactly the
// DaemonSet's capabilities (as its bounding set, so uid 0 holds no other),
// and without SYS_PTRACE to show why the manifest grants it. Seccomp and
// AppArmor are not applied here.
func TestKubernetesCapabilities(t *testing.T) {
	tracerImage, agent := images(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to run with a reduced capability set: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "tracer")
	id := docker(t, "create", "--pull", "never", tracerImage)
	docker(t, "cp", id+":/usr/bin/tracer", bin)
	docker(t, "rm", id)
	pid := startAgent(t, agent)

	var caps []string
	for _, c := range loadK8s(t).DaemonSet.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add {
		caps = append(caps, string(c))
	}
	run := func(caps []string) (string, error) {
		set := "-all"
		for _, c := range caps {
			set += ",+" + strings.ToLower(c)
		}
		ctx, cancel := context.WithTimeout(context.Background(), containerTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, setpriv, "--bounding-set", set, "--",
			bin, "trace", "--pid", strconv.Itoa(pid), "--duration", "3s", "--output", "none", "--func", regenerateBPF).CombinedOutput()
		return string(out), err
	}
	out, err := run(caps)
	if err != nil || calls(out, regenerateBPF) == 0 {
		t.Fatalf("with the DaemonSet's capabilities %v the tracer traced nothing: %v\n%s", caps, err, out)
	}
	without := slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return c == "SYS_PTRACE" })
	if out, err := run(without); err == nil {
		t.Errorf("without SYS_PTRACE (%v) the tracer still traced an agent holding NET_ADMIN:\n%s", without, out)
	}
}

// TestComposeDaemon runs `tracer daemon` in a container with the compose
// file's privileges and its daemon.yaml, changed only where a test must:
// the agent by PID (tests run several agents at once), spans to standard
// output instead of ClickHouse, no start jitter. Its metrics port is
// published on loopback. It checks that spans flow and that the metrics
// the dashboard's tracer health panels query are served.
func TestComposeDaemon(t *testing.T) {
	tracer, agent := images(t)
	pid := startAgent(t, agent)
	svc := loadCompose(t).Services["tracer"]

	var cfg map[string]any
	readYAML(t, volumes(svc)[configFlag(t, svc.Command)], &cfg)
	cfg["target"] = map[string]any{"pid": pid}
	cfg["exporters"] = []any{map[string]any{"json": map[string]any{}}}
	cfg["jitter"] = map[string]any{"start": "0s", "reattach": "0s"}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "daemon.yaml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var listen struct {
		Metrics struct{ Listen string } `yaml:"metrics"`
	}
	readYAML(t, filepath.Join(dir, "daemon.yaml"), &listen)
	_, metricsPort, err := net.SplitHostPort(listen.Metrics.Listen)
	if err != nil {
		t.Fatal(err)
	}

	name := "deploy-test-daemon-" + randHex(4)
	args := append([]string{"run", "-d", "--name", name, "-p", "127.0.0.1::" + metricsPort,
		"-v", filepath.Join(dir, "daemon.yaml") + ":/etc/tracer/daemon.yaml:ro"}, runArgs(t, svc)...)
	args = append(args, tracer)
	args = append(args, svc.Command...)
	docker(t, args...)
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	_, port, err := net.SplitHostPort(docker(t, "port", name, metricsPort+"/tcp"))
	if err != nil {
		t.Fatal(err)
	}

	// Spans reach standard output after the exporter's batch timeout.
	deadline := time.Now().Add(90 * time.Second)
	var metrics string
	for {
		metrics = scrape(port)
		logs, _ := exec.Command("docker", "logs", name).Output()
		if sampleValue(metrics, "tracer_probe_emitted_total", regenerateBPF) > 0 && bytes.Contains(logs, []byte("regenerateBPF")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no regenerateBPF call emitted and exported after 90s\nmetrics:\n%s\nlogs:\n%s", grepTracer(metrics), lastLines(logs, 30))
		}
		time.Sleep(time.Second)
	}

	served := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^(tracer_\w+)`).FindAllStringSubmatch(metrics, -1) {
		served[m[1]] = true
	}
	for _, name := range dashboardMetrics(t) {
		if !served[name] {
			t.Errorf("the dashboard queries %s, which the daemon does not serve", name)
		}
	}
}

func scrape(port string) string {
	resp, err := http.Get("http://127.0.0.1:" + port + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func grepTracer(metrics string) string {
	var lines []string
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, "tracer_") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// sampleValue returns the value of the sample of metric whose labels
// contain value (0 when absent).
func sampleValue(metrics, metric, value string) float64 {
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, metric+"{") && strings.Contains(l, `"`+value+`"`) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	return 0
}

// dashboardMetrics returns the tracer_ metrics the dashboard's Prometheus
// queries read.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardJSON)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range regexp.MustCompile(`\btracer_\w+`).FindAllString(tg.Expr, -1) {
				if !slices.Contains(names, m) {
					names = append(names, m)
				}
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("the dashboard queries no tracer_ metric")
	}
	return names
}
