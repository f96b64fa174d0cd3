package kernels

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// A Package is a Debian binary package of one architecture. Debian and Go
// name the two architectures alike: amd64 and arm64.
type Package struct {
	Name, Arch string
}

// sources are the suites the packages come from: bookworm for 6.1,
// bookworm-security for 6.12, bullseye for 5.10.
const sources = `deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
`

// A Cache holds packages unpacked, one directory each, so that a second
// run downloads nothing. Processes share it under a file lock.
type Cache struct {
	Dir string
}

// DefaultCache is tracer/kernels in the user's cache directory
// (XDG_CACHE_HOME, else ~/.cache).
func DefaultCache() (Cache, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return Cache{}, err
	}
	return Cache{Dir: filepath.Join(d, "tracer", "kernels")}, nil
}

// Unpacked returns the directory holding p's files, as dpkg-deb -x lays
// them out. A package not in the cache is downloaded with apt-get, through
// an apt configuration of the cache's own for p's architecture: the
// machine's sources, architectures and package state are left alone.
func (c Cache) Unpacked(p Package) (string, error) {
	dir := filepath.Join(c.Dir, p.Name+"_"+p.Arch)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(c.Dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	// Another process may have fetched it while this one waited.
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}

	tmp, err := os.MkdirTemp(c.Dir, "fetch-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	deb, err := c.download(p, tmp)
	if err != nil {
		return "", err
	}
	root := filepath.Join(tmp, "root")
	if out, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %v: %s", filepath.Base(deb), err, bytes.TrimSpace(out))
	}
	// Complete or absent: the directory appears in one rename.
	if err := os.Rename(root, dir); err != nil {
		return "", err
	}
	return dir, nil
}

// download fetches p's .deb into dir and returns its path. It updates the
// package lists only when they are missing or do not have p (a new point
// release removed it from the mirror).
func (c Cache) download(p Package, dir string) (string, error) {
	conf, err := c.aptConfig(p.Arch)
	if err != nil {
		return "", err
	}
	apt := func(args ...string) ([]byte, error) {
		cmd := exec.Command("apt-get", append([]string{"-q"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "APT_CONFIG="+conf)
		return cmd.CombinedOutput()
	}
	lists, _ := filepath.Glob(filepath.Join(filepath.Dir(conf), "lists", "*_Packages*"))
	if len(lists) > 0 {
		if _, err := apt("download", p.Name); err == nil {
			return findDeb(dir, p)
		}
	}
	if out, err := apt("update"); err != nil {
		return "", fmt.Errorf("apt-get update (%s): %v\n%s", p.Arch, err, out)
	}
	if out, err := apt("download", p.Name); err != nil {
		return "", fmt.Errorf("apt-get download %s (%s): %v\n%s", p.Name, p.Arch, err, out)
	}
	return findDeb(dir, p)
}

func findDeb(dir string, p Package) (string, error) {
	debs, _ := filepath.Glob(filepath.Join(dir, p.Name+"_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s (%s) left %d .deb files", p.Name, p.Arch, len(debs))
	}
	return debs[0], nil
}

// aptConfig writes, once, the apt configuration for arch under the cache
// and returns its path, for APT_CONFIG.
func (c Cache) aptConfig(arch string) (string, error) {
	dir := filepath.Join(c.Dir, "apt", arch)
	for _, d := range []string{"lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	conf := filepath.Join(dir, "apt.conf")
	files := map[string]string{
		"sources.list": sources,
		"status":       "",
		"apt.conf": fmt.Sprintf(`APT::Architecture "%[1]s";
APT::Architectures { "%[1]s"; };
APT::Sandbox::User "root";
Acquire::Languages "none";
Dir::Etc::sourcelist "%[2]s/sources.list";
Dir::Etc::sourceparts "-";
Dir::State::Lists "%[2]s/lists";
Dir::State::status "%[2]s/status";
Dir::Cache "%[2]s/cache";
`, arch, dir),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return "", err
		}
	}
	return conf, nil
}
