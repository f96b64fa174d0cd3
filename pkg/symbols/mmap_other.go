//go:build !linux

package symbols

import (
	"errors"
	"os"
)

func mmapFile(*os.File, int64) ([]byte, func() error, error) {
	return nil, nil, errors.ErrUnsupported
}

func statInode(*os.File) uint64 { return 0 }
