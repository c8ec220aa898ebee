package main

import (
	"bytes"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// waitInotify prints "watching" once an inotify watch is on dir, then the
// events it sees until name is created in or moved into dir.
func waitInotify(dir, name string) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		fail(err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_DELETE); err != nil {
		fail(fmt.Errorf("watch %s: %w", dir, err))
	}
	fmt.Println("watching")
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			fail(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			got := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			kind := "delete"
			switch {
			case ev.Mask&unix.IN_MOVED_TO != 0:
				kind = "moved_to"
			case ev.Mask&unix.IN_CREATE != 0:
				kind = "create"
			}
			fmt.Printf("event %s %s\n", kind, got)
			if got == name && kind != "delete" {
				return
			}
		}
	}
}
