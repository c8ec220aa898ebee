package rootfsbuilder

import (
	"os"
	"syscall"
)

// inodeKey identifies a multiply linked file, to keep hard links as links.
func inodeKey(fi os.FileInfo) ([2]uint64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Nlink < 2 {
		return [2]uint64{}, false
	}
	return [2]uint64{uint64(st.Dev), st.Ino}, true
}
