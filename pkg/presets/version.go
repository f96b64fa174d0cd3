package presets

import (
	"debug/buildinfo"
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/mod/semver"
)

// Where a binary's cilium release was read.
const (
	FromLdflags  = "-ldflags"    // cilium's Makefile sets pkg/version.ciliumVersion with -X
	FromModule   = "main module" // the go command stamps a tagged checkout's version
	FromOverride = "set by the user"
)

// ldflagsVersion finds the release in cilium's
// -X "github.com/cilium/cilium/pkg/version.ciliumVersion=1.18.5 <commit> <date>",
// however the flag is quoted.
var ldflagsVersion = regexp.MustCompile(`github\.com/cilium/cilium/pkg/version\.ciliumVersion=['"]?v?([0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.]+)?)`)

// ReleaseOf returns the cilium release a binary was built from, as
// "v1.18.5", and where it was read, or "" if the build information does not
// say. cilium's Makefile builds without -trimpath and passes the release
// with -X in -ldflags, which the go command records (stripped binaries
// keep it); builds with -trimpath have no -ldflags setting, and then a
// main module version the go command took from a release tag (Go >= 1.24)
// is used. A pseudo-version, "(devel)" or a modified checkout says
// nothing.
func ReleaseOf(bi *buildinfo.BuildInfo) (release, from string) {
	if bi == nil {
		return "", ""
	}
	for _, s := range bi.Settings {
		if s.Key != "-ldflags" {
			continue
		}
		if m := ldflagsVersion.FindStringSubmatch(s.Value); m != nil && semver.IsValid("v"+m[1]) {
			return "v" + m[1], FromLdflags
		}
	}
	if bi.Main.Path == "github.com/cilium/cilium" && isRelease(bi.Main.Version) {
		return bi.Main.Version, FromModule
	}
	return "", ""
}

// isRelease reports whether v is a release version, vX.Y.Z: not a
// pre-release, pseudo-version or +dirty build.
func isRelease(v string) bool {
	return semver.IsValid(v) && semver.Canonical(v) == v && semver.Prerelease(v) == ""
}

// ParseRelease reads a release given by the user, "v1.17.16" or "1.17.16".
func ParseRelease(s string) (string, error) {
	v := "v" + strings.TrimPrefix(strings.TrimSpace(s), "v")
	if !isRelease(v) {
		return "", fmt.Errorf("cilium version %q: want a release such as v1.18.5", s)
	}
	return v, nil
}

// MinorOf returns the minor release of a release: "1.18" for "v1.18.5".
func MinorOf(release string) string {
	return strings.TrimPrefix(semver.MajorMinor(release), "v")
}
