package presets_test

import (
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/presets"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

func TestReleaseOf(t *testing.T) {
	ldflags := func(v string) *buildinfo.BuildInfo {
		return &buildinfo.BuildInfo{Main: debug.Module{Path: "github.com/cilium/cilium", Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "-buildmode", Value: "exe"}, {Key: "-ldflags", Value: v}}}
	}
	module := func(path, v string) *buildinfo.BuildInfo {
		return &buildinfo.BuildInfo{Main: debug.Module{Path: path, Version: v}}
	}
	for _, tc := range []struct {
		name      string
		bi        *buildinfo.BuildInfo
		want, src string
	}{
		{"cilium's Makefile", ldflags(`-X "github.com/cilium/cilium/pkg/version.ciliumVersion=1.18.5 3e8b1a2c 2025-12-01T10:00:00+01:00" -s -w -X "github.com/cilium/cilium/pkg/envoy.requiredEnvoyVersionSHA=abc"`), "v1.18.5", presets.FromLdflags},
		{"-X=, quoted once", ldflags(`-X='github.com/cilium/cilium/pkg/version.ciliumVersion=1.16.19'`), "v1.16.19", presets.FromLdflags},
		{"a release candidate", ldflags(`-X "github.com/cilium/cilium/pkg/version.ciliumVersion=1.19.0-rc.1 abc"`), "v1.19.0-rc.1", presets.FromLdflags},
		{"other -X only", ldflags(`-s -w -X main.version=1.2.3`), "", ""},
		{"tagged checkout", module("github.com/cilium/cilium", "v1.17.16"), "v1.17.16", presets.FromModule},
		{"modified checkout", module("github.com/cilium/cilium", "v1.17.16+dirty"), "", ""},
		{"pseudo-version", module("github.com/cilium/cilium", "v1.18.6-0.20251201100000-0123456789ab"), "", ""},
		{"devel", module("github.com/cilium/cilium", "(devel)"), "", ""},
		{"another module", module("example.com/agent", "v1.18.5"), "", ""},
		{"nothing", nil, "", ""},
	} {
		if got, src := presets.ReleaseOf(tc.bi); got != tc.want || src != tc.src {
			t.Errorf("%s: ReleaseOf = %q, %q; want %q, %q", tc.name, got, src, tc.want, tc.src)
		}
	}
}

func TestParseRelease(t *testing.T) {
	for in, want := range map[string]string{"v1.17.16": "v1.17.16", "1.18.5": "v1.18.5", " v1.16.0 ": "v1.16.0"} {
		if got, err := presets.ParseRelease(in); err != nil || got != want {
			t.Errorf("ParseRelease(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "1.18", "v1.18.5-rc.1", "latest", "v1.18.5+dirty"} {
		if got, err := presets.ParseRelease(in); err == nil {
			t.Errorf("ParseRelease(%q) = %q, want an error", in, got)
		}
	}
}

const fakeVersion = `github.com/cilium/cilium/pkg/version.ciliumVersion=`

// The release is read from real builds of testdata/fakecilium, a module
// named like cilium's: with cilium's -X ldflag, stripped or not; without
// it; with -trimpath, which drops -ldflags from the build information, as
// the lab's builds are made; from a tagged git checkout (Go >= 1.24 stamps
// the tag), and not from a modified one.
func TestDetectVersion(t *testing.T) {
	for _, tc := range []struct {
		name      string
		flags     []string
		git       string // tag a git checkout with it, "dirty": and modify it after
		want, src string
	}{
		{"-X, stripped", []string{"-ldflags", `-X "` + fakeVersion + `1.17.16 0123abcd 2025-11-01T00:00:00Z" -s -w`}, "", "v1.17.16", presets.FromLdflags},
		{"-X", []string{"-ldflags", `-X "` + fakeVersion + `1.16.19 0123abcd 2025-11-01T00:00:00Z"`}, "", "v1.16.19", presets.FromLdflags},
		{"no -X", nil, "", "", ""},
		{"-X with -trimpath", []string{"-trimpath", "-ldflags", `-X "` + fakeVersion + `1.17.16 x y"`}, "", "", ""},
		{"tagged checkout", []string{"-trimpath", "-buildvcs=true"}, "v1.18.5", "v1.18.5", presets.FromModule},
		{"modified checkout", []string{"-trimpath", "-buildvcs=true"}, "dirty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := open(t, buildFake(t, tc.git, tc.flags...))
			v, warnings, err := presets.DetectVersion(f, "")
			if err != nil {
				t.Fatal(err)
			}
			if v.Release != tc.want || v.From != tc.src {
				t.Errorf("release %q %q, want %q %q", v.Release, v.From, tc.want, tc.src)
			}
			if tc.want == "" {
				if v.Minor != presets.Newest() || len(warnings) != 1 || !strings.Contains(warnings[0], "--cilium-version") {
					t.Errorf("unknown release: minor %s, warnings %q; want the newest, and one warning naming --cilium-version", v.Minor, warnings)
				}
				// The user's word is taken.
				if v, _, err := presets.DetectVersion(f, "1.17.16"); err != nil || v.Release != "v1.17.16" || v.From != presets.FromOverride || v.Minor != "1.17" {
					t.Errorf("override: %+v, %v", v, err)
				}
			} else if v.Minor != presets.MinorOf(tc.want) || len(warnings) != 0 {
				t.Errorf("minor %s, warnings %q", v.Minor, warnings)
			}
		})
	}
	// A release of a minor without presets of its own gets the newest.
	f := open(t, buildFake(t, "", "-ldflags", `-X "`+fakeVersion+`1.99.0 x y"`))
	v, warnings, err := presets.DetectVersion(f, "")
	if err != nil || v.Release != "v1.99.0" || v.Minor != presets.Newest() || len(warnings) != 1 || !strings.Contains(warnings[0], "v1.99.0") {
		t.Errorf("v1.99.0: %+v %q %v", v, warnings, err)
	}
}

// Select on the fake agent: the one preset function it has is selected,
// each other one is a warning naming it. Its captures come from DWARF
// unstripped, from the catalogue of the release stripped (the fake's own
// layout differs: the catalogue is cilium's), and not at all, with one
// warning, from a stripped binary of an unknown release. So does the error
// result of a stripped binary: the catalogue has cilium's regenerateBPF
// return its error in registers 1 and 2.
func TestSelect(t *testing.T) {
	const bpf = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF"
	p, err := presets.Lookup("endpoint-regeneration")
	if err != nil {
		t.Fatal(err)
	}
	tagged := []string{"-ldflags", `-X "` + fakeVersion + `1.18.5 x y"`}
	for _, tc := range []struct {
		name  string
		flags []string
		want  []string // captures, raw
		err   string   // the error result, raw
		warn  []string // the warnings besides the missing functions'
	}{
		{"unstripped", tagged, []string{"endpoint_id=arg0+0:u16", "pod=arg0+8:string", "namespace=arg0+24:string", "policy_revision=arg0+40:u64"}, "", nil},
		{"stripped", append(slices.Clip(tagged), "-ldflags=-s -w "+tagged[1]), []string{"endpoint_id=arg0+184:u16", "pod=arg0+680:string", "namespace=arg0+696:string", "policy_revision=arg0+760:u64"}, "ret1:error", nil},
		{"stripped, unknown release", []string{"-ldflags=-s -w"}, nil, "", []string{"does not say which cilium release", "4 preset captures not read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := open(t, buildFake(t, "", tc.flags...))
			sel, err := presets.Select(f, []string{p.Name}, presets.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(sel.Funcs) != 1 || sel.Funcs[0].Func.Name != bpf {
				t.Fatalf("selected %q, want %s", sel.Names(), bpf)
			}
			var got []string
			for _, c := range sel.Funcs[0].Captures {
				got = append(got, c.Name+"="+c.Raw())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("captures %q, want %q", got, tc.want)
			}
			if c, ok := sel.ErrorResult(bpf); ok != (tc.err != "") || ok && c.Raw() != tc.err {
				t.Errorf("error result %+v (%v), want %q", c, ok, tc.err)
			}
			var missing, other []string
			for _, w := range sel.Warnings {
				if fn, ok := strings.CutPrefix(w, "preset endpoint-regeneration: "); ok && strings.Contains(fn, " is not in the binary") {
					missing = append(missing, strings.Fields(fn)[0])
				} else {
					other = append(other, w)
				}
			}
			if len(other) != len(tc.warn) {
				t.Errorf("warnings %q, want %d saying %q", other, len(tc.warn), tc.warn)
			}
			for i := range min(len(other), len(tc.warn)) {
				if !strings.Contains(other[i], tc.warn[i]) {
					t.Errorf("warning %q does not say %q", other[i], tc.warn[i])
				}
			}
			for _, fn := range p.For(presets.Newest()) {
				if fn.Name != bpf && !slices.Contains(missing, fn.Name) {
					t.Errorf("%s is missing without a warning", fn.Name)
				}
			}
			if len(missing) != len(p.For(presets.Newest()))-1 {
				t.Errorf("%d functions warned missing: %q", len(missing), missing)
			}
		})
	}
	// An offsets file from the unstripped build of the same code gives
	// a stripped binary of an unknown release the captures it has.
	unstripped := open(t, buildFake(t, ""))
	stripped := open(t, buildFake(t, "", "-ldflags=-s -w"))
	fns, err := unstripped.Funcs(bpf)
	if err != nil {
		t.Fatal(err)
	}
	o, err := offsets.New(unstripped, fns, [][2]string{{"endpoint_id", "e.ID"}, {"pod", "e.K8sPodName"}})
	if err != nil {
		t.Fatal(err)
	}
	sel, err := presets.Select(stripped, []string{p.Name}, presets.Options{Offsets: o})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range sel.Captures(bpf) {
		got = append(got, c.Name+"="+c.Raw())
	}
	if !slices.Equal(got, []string{"endpoint_id=arg0+0:u16", "pod=arg0+8:string"}) ||
		!slices.ContainsFunc(sel.Warnings, func(w string) bool { return strings.HasPrefix(w, "2 preset captures not read") }) {
		t.Errorf("with an offsets file: captures %q, warnings %q", got, sel.Warnings)
	}
	// One from another build is refused.
	other := open(t, buildFake(t, "", "-ldflags", `-X "`+fakeVersion+`1.18.5 x y"`, "-tags", "other"))
	if _, err := presets.Select(other, []string{p.Name}, presets.Options{Offsets: o}); err == nil || !strings.Contains(err.Error(), "different build") {
		t.Errorf("an offsets file of another build: %v", err)
	}

	if _, err := presets.Select(nil, []string{"endpoint-regeneration", "nope"}, presets.Options{}); err == nil ||
		err.Error() != `unknown preset "nope" (presets: endpoint-regeneration, policy, identity, ipcache, kvstore, datapath)` {
		t.Errorf("unknown preset: %v", err)
	}
}

// buildFake builds testdata/fakecilium's agent with the go flags given;
// with tag, from a git checkout tagged so ("dirty": tagged v1.18.5, then
// modified).
func buildFake(t *testing.T, tag string, flags ...string) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("testdata", "fakecilium"))
	if err != nil {
		t.Fatal(err)
	}
	if tag != "" {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
			t.Fatal(err)
		}
		src = dir
		name := tag
		if tag == "dirty" {
			name = "v1.18.5"
		}
		for _, argv := range [][]string{
			{"init", "-q"}, {"add", "-A"}, {"-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "fake"}, {"tag", name},
		} {
			cmd := exec.Command("git", argv...)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("git %s: %v\n%s", argv, err, out)
			}
		}
		if tag == "dirty" {
			if err := os.WriteFile(filepath.Join(dir, "daemon", "extra.go"), []byte("package main\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := filepath.Join(t.TempDir(), "cilium-agent")
	cmd := exec.Command("go", append(append([]string{"build", "-o", out}, flags...), "./daemon")...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off")
	if !slices.Contains(flags, "-buildvcs=true") {
		cmd.Args = slices.Insert(cmd.Args, 2, "-buildvcs=false")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %q: %v\n%s", flags, err, b)
	}
	return out
}
