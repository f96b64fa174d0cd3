//go:build !linux

package symbols

import (
	"errors"
	"os"
)

func mmapFile(*os.File, int64) ([]byte, func() error, error) {
	return nil, nil, errors.ErrUnsupported
}

type fileIdent struct {
	dev, ino uint64
}

func statIdent(*os.File) *fileIdent { return nil }
