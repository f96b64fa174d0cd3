package ciliumsrc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
)

// ModulePath is cilium's module.
const ModulePath = "github.com/cilium/cilium"

// A Release is the source of one cilium release.
type Release struct {
	Version string // e.g. v1.18.5
	Module  Module
	// GoMinor is the minor of the go directive of its go.mod: the oldest
	// Go release that builds it.
	GoMinor int

	// mods are the modules of its build list, by path, replacements
	// applied.
	mods map[string]module.Version
	// src caches the files parsed, for every architecture and standard
	// library its layouts are computed for.
	src *sourceCache
}

// Open downloads a cilium release and reads its go.mod.
func Open(ctx context.Context, version string) (*Release, error) {
	m, err := Download(ctx, ModulePath, version)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(m.Dir, "go.mod"))
	if err != nil {
		return nil, err
	}
	mf, err := modfile.ParseLax("go.mod", data, nil)
	if err != nil {
		return nil, fmt.Errorf("cilium %s: %w", version, err)
	}
	r := &Release{Version: version, Module: m, mods: map[string]module.Version{}}
	if mf.Go == nil {
		return nil, fmt.Errorf("cilium %s: go.mod has no go directive", version)
	}
	parts := strings.Split(mf.Go.Version, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("cilium %s: go directive %q", version, mf.Go.Version)
	}
	if r.GoMinor, err = strconv.Atoi(parts[1]); err != nil {
		return nil, fmt.Errorf("cilium %s: go directive %q", version, mf.Go.Version)
	}
	// Since Go 1.17 the go.mod of a module lists every module its
	// packages import from.
	for _, req := range mf.Require {
		r.mods[req.Mod.Path] = req.Mod
	}
	for _, rep := range mf.Replace {
		if _, ok := r.mods[rep.Old.Path]; !ok || rep.New.Version == "" {
			continue
		}
		// cilium's fork of apimachinery is not on the module proxy; the
		// lab builds with the release it forks (internal/ciliumlab). The
		// presets' layouts hold one type of it, types.UID, a string in
		// both.
		if rep.Old.Path == "k8s.io/apimachinery" {
			continue
		}
		r.mods[rep.Old.Path] = rep.New
	}
	return r, nil
}

// dir returns the directory of the package at import path, downloading its
// module if needed; std is the standard library, for packages without a
// dot in their first element and for those the standard library vendors.
func (r *Release) dir(ctx context.Context, std *StdLib, path string, fromStd bool) (string, error) {
	first, _, _ := strings.Cut(path, "/")
	if !strings.Contains(first, ".") {
		return filepath.Join(std.Root, "src", path), nil
	}
	if fromStd {
		return filepath.Join(std.Root, "src", "vendor", path), nil
	}
	if path == ModulePath || strings.HasPrefix(path, ModulePath+"/") {
		return filepath.Join(r.Module.Dir, strings.TrimPrefix(path, ModulePath)), nil
	}
	best := ""
	for p := range r.mods {
		if (path == p || strings.HasPrefix(path, p+"/")) && len(p) > len(best) {
			best = p
		}
	}
	if best == "" {
		return "", fmt.Errorf("cilium %s: no module in go.mod provides %s", r.Version, path)
	}
	mv := r.mods[best]
	m, err := Download(ctx, mv.Path, mv.Version)
	if err != nil {
		return "", err
	}
	return filepath.Join(m.Dir, strings.TrimPrefix(path, best)), nil
}
