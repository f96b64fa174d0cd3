package symbols

import (
	"os"
	"syscall"
)

// mmapFile maps the whole file read-only. Mapping instead of reading keeps a
// 100 MB binary out of the heap: only the pages of the tables actually
// consulted are ever loaded.
func mmapFile(fh *os.File, size int64) ([]byte, func() error, error) {
	if int64(int(size)) != size {
		return nil, nil, syscall.EFBIG
	}
	b, err := syscall.Mmap(int(fh.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		return nil, nil, err
	}
	return b, func() error { return syscall.Munmap(b) }, nil
}

// statInode returns the file's inode number, or 0.
func statInode(fh *os.File) uint64 {
	st, err := fh.Stat()
	if err != nil {
		return 0
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	return sys.Ino
}
