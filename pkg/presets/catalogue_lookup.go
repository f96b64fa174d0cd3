package presets

import (
	"fmt"
	"slices"
)

// A build is a cilium release for an architecture, built with a Go minor
// release: the layouts of the standard library's types (sync.Map, for one)
// change between Go releases, so the offsets of the fields after them do.
type build struct {
	release string
	arch    string
	goMinor int
}

// layout returns the captures of each preset function, in the raw form
// ("endpoint_id=arg0+184:u16"), then its error result if it returns one
// ("error=ret1:error"), for a release built for arch with Go
// 1.goMinor (0: unknown). A Go release the catalogue was not computed for
// is fine when every Go release it was computed for gives the same
// layout.
func layout(release, arch string, goMinor int) (map[string][]string, error) {
	if i, ok := builds[build{release, arch, goMinor}]; ok {
		return layouts[i], nil
	}
	if !slices.Contains(Releases, release) {
		return nil, fmt.Errorf("cilium %s is not in the presets' offsets catalogue (%s to %s)", release, Releases[0], Releases[len(Releases)-1])
	}
	found := -1
	for b, i := range builds {
		if b.release != release || b.arch != arch {
			continue
		}
		if found >= 0 && found != i {
			return nil, fmt.Errorf("the offsets of cilium %s on %s depend on the Go release, and go1.%d is not in the catalogue", release, arch, goMinor)
		}
		found = i
	}
	if found < 0 {
		return nil, fmt.Errorf("the presets' offsets catalogue has no cilium %s for %s", release, arch)
	}
	return layouts[found], nil
}
