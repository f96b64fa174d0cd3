// Command presetgen writes pkg/presets/catalogue.go: the raw form
// (argN+OFFSET:TYPE) of every preset capture, and of every preset
// function's error result (error=retN:error, result registers N and N+1),
// for every supported cilium release, architecture and Go minor release
// that can build it, computed from cilium's module source with go/types
// (internal/ciliumsrc). A preset
// function a release does not declare, or a capture it cannot resolve,
// fails the run.
//
//	go generate ./pkg/presets
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"go/format"
	"log"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/semver"

	"github.com/cilium-tracer/tracer/internal/ciliumsrc"
	"github.com/cilium-tracer/tracer/pkg/presets"
)

// releases are the cilium releases the catalogue covers: every 1.16, 1.17
// and 1.18 release the Go module proxy serves and the checksum database
// verifies. Checked on 2026-12-01: the proxy answers 403 ("not available")
// for v1.16.7, v1.16.10 to v1.16.16, v1.16.18, v1.17.7 and v1.17.9 to
// v1.17.13, and the checksum database 404 for v1.17.4, v1.17.5 and
// v1.17.17 (the go command refuses an unverified module).
var releases = []string{
	"v1.16.0", "v1.16.1", "v1.16.2", "v1.16.3", "v1.16.4", "v1.16.5", "v1.16.6", "v1.16.8", "v1.16.9", "v1.16.17", "v1.16.19",
	"v1.17.0", "v1.17.1", "v1.17.2", "v1.17.3", "v1.17.6", "v1.17.8", "v1.17.14", "v1.17.15", "v1.17.16",
	"v1.18.0", "v1.18.1", "v1.18.2", "v1.18.3", "v1.18.4", "v1.18.5", "v1.18.6",
}

var arches = []string{"amd64", "arm64"}

func main() {
	out := flag.String("o", "catalogue.go", "file to write")
	only := flag.String("releases", "", "comma-separated releases to compute (default: all), for a quick look; the file is then written to standard output")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("presetgen: ")
	rels := releases
	if *only != "" {
		rels = strings.Split(*only, ",")
		*out = ""
	}
	start := time.Now()
	cat, err := generate(context.Background(), rels)
	if err != nil {
		log.Fatal(err)
	}
	src, err := cat.source()
	if err != nil {
		log.Fatal(err)
	}
	if *out == "" {
		os.Stdout.Write(src)
	} else if err := os.WriteFile(*out, src, 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("%d releases, %d builds, %d distinct layouts in %s", len(rels), len(cat.builds), len(cat.layouts), time.Since(start).Round(time.Second))
}

type build struct {
	release string
	arch    string
	goMinor int
}

type catalogue struct {
	releases []string
	layouts  []map[string][]string
	builds   map[build]int
}

// add records a layout for a build, sharing equal layouts.
func (c *catalogue) add(b build, l map[string][]string) {
	for i, known := range c.layouts {
		if reflect.DeepEqual(known, l) {
			c.builds[b] = i
			return
		}
	}
	c.layouts = append(c.layouts, l)
	c.builds[b] = len(c.layouts) - 1
}

func generate(ctx context.Context, rels []string) (*catalogue, error) {
	cat := &catalogue{releases: rels, builds: map[build]int{}}
	// Per minor, the captures no release has: a capture a function lacks
	// in some releases (a parameter added in a patch release) is left out
	// of those, but one that never resolves is a mistake in the presets.
	absentIn := map[string]map[string]int{}
	releasesOf := map[string]int{}
	for _, v := range rels {
		start := time.Now()
		rel, err := ciliumsrc.Open(ctx, v)
		if err != nil {
			return nil, err
		}
		reqs, err := requests(presets.MinorOf(v))
		if err != nil {
			return nil, fmt.Errorf("cilium %s: %w", v, err)
		}
		n := 0
		for _, goMinor := range ciliumsrc.GoMinors() {
			if goMinor < rel.GoMinor {
				continue
			}
			std, err := ciliumsrc.Std(ctx, goMinor)
			if err != nil {
				return nil, err
			}
			for _, arch := range arches {
				caps, absent, err := rel.Resolve(ctx, arch, std, reqs)
				if err != nil {
					return nil, fmt.Errorf("cilium %s, linux/%s, %s: %w", v, arch, std.Release, err)
				}
				if n == 0 {
					minor := presets.MinorOf(v)
					releasesOf[minor]++
					if absentIn[minor] == nil {
						absentIn[minor] = map[string]int{}
					}
					for _, a := range absent {
						absentIn[minor][a]++
						log.Printf("cilium %s: %s: no such parameter in this release", v, a)
					}
				}
				l := map[string][]string{}
				for fn, cs := range caps {
					for _, c := range cs {
						l[fn] = append(l[fn], c.Name+"="+c.Expr)
					}
				}
				cat.add(build{v, arch, goMinor}, l)
				n++
			}
		}
		log.Printf("cilium %s: %d functions, %d builds (go1.%d and later) in %s", v, len(reqs), n, rel.GoMinor, time.Since(start).Round(time.Millisecond))
	}
	for minor, absent := range absentIn {
		for a, n := range absent {
			if n == releasesOf[minor] {
				return nil, fmt.Errorf("cilium %s: capture %s: no release has the parameter", minor, a)
			}
		}
	}
	return cat, nil
}

// requests are the functions of every preset in a minor release, each
// once, with the captures the presets name on it.
func requests(minor string) ([]ciliumsrc.Request, error) {
	var reqs []ciliumsrc.Request
	index := map[string]int{}
	for _, p := range presets.All {
		for _, f := range p.For(minor) {
			i, ok := index[f.Name]
			if !ok {
				i = len(reqs)
				index[f.Name] = i
				reqs = append(reqs, ciliumsrc.Request{Func: f.Name})
			}
		captures:
			for _, c := range f.Captures {
				name, expr, ok := strings.Cut(c, "=")
				if !ok {
					return nil, fmt.Errorf("preset %s: %s: capture %q is not NAME=EXPR", p.Name, f.Name, c)
				}
				for _, have := range reqs[i].Captures {
					if have[0] == name {
						if have[1] != expr {
							return nil, fmt.Errorf("%s: capture %s is %s in one preset and %s in another", f.Name, name, have[1], expr)
						}
						continue captures
					}
				}
				reqs[i].Captures = append(reqs[i].Captures, [2]string{name, expr})
			}
		}
	}
	return reqs, nil
}

// source writes the catalogue as Go.
func (c *catalogue) source() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`// Code generated by presetgen; DO NOT EDIT.

package presets

// Releases are the cilium releases the catalogue has offsets for.
var Releases = []string{`)
	for _, r := range c.releases {
		fmt.Fprintf(&b, "%q,", r)
	}
	b.WriteString("}\n\n// layouts are the captures of the preset functions in the raw form, then\n// the error result of each that returns one (error=retN:error), one entry\n// per distinct layout.\nvar layouts = []map[string][]string{\n")
	for _, l := range c.layouts {
		b.WriteString("{\n")
		for _, fn := range slices.Sorted(maps.Keys(l)) {
			fmt.Fprintf(&b, "%q: {", fn)
			for _, s := range l[fn] {
				fmt.Fprintf(&b, "%q,", s)
			}
			b.WriteString("},\n")
		}
		b.WriteString("},\n")
	}
	b.WriteString("}\n\n// builds gives the layout of each release, architecture and Go minor\n// release that builds it.\nvar builds = map[build]int{\n")
	keys := slices.SortedFunc(maps.Keys(c.builds), func(a, b build) int {
		if x := semver.Compare(a.release, b.release); x != 0 {
			return x
		}
		if x := strings.Compare(a.arch, b.arch); x != 0 {
			return x
		}
		return a.goMinor - b.goMinor
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "{%q, %q, %d}: %d,\n", k.release, k.arch, k.goMinor, c.builds[k])
	}
	b.WriteString("}\n")
	return format.Source(b.Bytes())
}
