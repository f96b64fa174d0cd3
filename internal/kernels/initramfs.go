package kernels

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// An Initramfs writes a cpio archive in the "newc" format, which the kernel
// unpacks into its first root file system. Parent directories are added
// before the first entry below them, since the kernel creates none itself.
type Initramfs struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

// NewInitramfs starts an archive on w; Close ends it.
func NewInitramfs(w io.Writer) *Initramfs {
	return &Initramfs{w: bufio.NewWriterSize(w, 1<<20), dirs: map[string]bool{"": true}}
}

const (
	typeDir     = 0o040000
	typeFile    = 0o100000
	typeSymlink = 0o120000
	typeCharDev = 0o020000
)

// Dir adds the directory name (and its parents).
func (a *Initramfs) Dir(name string) {
	name = strings.Trim(name, "/")
	if name == "." || a.dirs[name] {
		return
	}
	a.Dir(path.Dir(name))
	a.dirs[name] = true
	a.entry(name, typeDir|0o755, 0, 0, nil, 0)
}

// File adds a regular file with contents data.
func (a *Initramfs) File(name string, perm uint32, data []byte) {
	a.entry(a.parent(name), typeFile|perm, 0, 0, strings.NewReader(string(data)), int64(len(data)))
}

// CopyFile adds the file at src on this machine as name, executable.
func (a *Initramfs) CopyFile(name, src string) {
	f, err := os.Open(src)
	if err != nil {
		a.fail(err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		a.fail(err)
		return
	}
	a.entry(a.parent(name), typeFile|0o755, 0, 0, f, st.Size())
}

// Symlink adds name pointing at target.
func (a *Initramfs) Symlink(name, target string) {
	a.entry(a.parent(name), typeSymlink|0o777, 0, 0, strings.NewReader(target), int64(len(target)))
}

// CharDev adds a character device node, such as /dev/console, which must
// exist before /init runs for it to have a console.
func (a *Initramfs) CharDev(name string, major, minor uint32) {
	a.entry(a.parent(name), typeCharDev|0o600, major, minor, nil, 0)
}

// Close writes the trailer and flushes the archive.
func (a *Initramfs) Close() error {
	a.entry("TRAILER!!!", 0, 0, 0, nil, 0)
	if a.err != nil {
		return a.err
	}
	return a.w.Flush()
}

// parent adds name's parent directory and returns name without its
// leading slash, as cpio archives name their entries.
func (a *Initramfs) parent(name string) string {
	name = strings.Trim(name, "/")
	a.Dir(path.Dir(name))
	return name
}

func (a *Initramfs) fail(err error) {
	if a.err == nil {
		a.err = err
	}
}

func (a *Initramfs) entry(name string, mode, rdevMajor, rdevMinor uint32, data io.Reader, size int64) {
	if a.err != nil {
		return
	}
	a.ino++
	nlink := 1
	if mode&typeDir == typeDir {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with its NUL), check
	fmt.Fprintf(a.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		a.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	a.w.WriteString(name)
	a.w.WriteByte(0)
	a.pad(110 + len(name) + 1)
	if data != nil {
		n, err := io.Copy(a.w, data)
		if err == nil && n != size {
			err = fmt.Errorf("initramfs: %s: wrote %d bytes of %d", name, n, size)
		}
		if err != nil {
			a.fail(err)
			return
		}
	}
	a.pad(int(size))
}

// pad aligns the archive to 4 bytes after n bytes of a header or file.
func (a *Initramfs) pad(n int) {
	for ; n%4 != 0; n++ {
		a.w.WriteByte(0)
	}
}
