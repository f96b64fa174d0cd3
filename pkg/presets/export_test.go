package presets

import "testing"

// SetLayout makes l the catalogue's layout of release on arch with Go
// 1.goMinor until the test ends: a stand-in agent's, computed from its
// source as presetgen computes cilium's.
func SetLayout(t testing.TB, release, arch string, goMinor int, l map[string][]string) {
	b := build{release, arch, goMinor}
	old, had := builds[b]
	n := len(layouts)
	layouts = append(layouts, l)
	builds[b] = n
	t.Cleanup(func() {
		layouts = layouts[:n]
		if had {
			builds[b] = old
		} else {
			delete(builds, b)
		}
	})
}
