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

type fileIdent struct {
	dev, ino uint64
}

func statIdent(fh *os.File) *fileIdent {
	st, err := fh.Stat()
	if err != nil {
		return nil
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return &fileIdent{dev: uint64(sys.Dev), ino: sys.Ino}
}
