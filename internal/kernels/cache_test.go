package kernels

import (
	"os"
	"path/filepath"
	"testing"
)

// A package in the cache is used as it is: apt-get and dpkg-deb do not run
// (there is no PATH to find them on).
func TestCacheReuse(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	p := Package{Name: "linux-image-6.1.0-57-cloud-arm64-unsigned", Arch: "arm64"}
	want := filepath.Join(c.Dir, p.Name+"_"+p.Arch)
	if err := os.MkdirAll(filepath.Join(want, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", "")
	got, err := c.Unpacked(p)
	if err != nil || got != want {
		t.Fatalf("Unpacked = %q, %v; want %q from the cache", got, err, want)
	}
}
