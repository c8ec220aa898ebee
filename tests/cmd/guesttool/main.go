// Command guesttool is a small static helper put into test initrds and
// container rootfs by the end-to-end tests:
//
//	guesttool alloc MiB          allocate and touch MiB of memory, then sleep
//	guesttool vsock-check PORT   start a second agent on vsock://-1:PORT and
//	                             dial it through vsock loopback (CID 1)
//	guesttool echo WORDS...      print the words
//	guesttool inotify DIR NAME   watch DIR, print "watching", then wait for
//	                             NAME to be created or moved into it
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: guesttool alloc MiB | vsock-check PORT | echo WORDS... | inotify DIR NAME")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "inotify":
		if len(os.Args) != 4 {
			fail(fmt.Errorf("inotify DIR NAME"))
		}
		waitInotify(os.Args[2], os.Args[3])
	case "alloc":
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fail(err)
		}
		alloc(n)
	case "vsock-check":
		if len(os.Args) < 3 {
			fail(fmt.Errorf("vsock-check PORT"))
		}
		vsockCheck(os.Args[2])
	case "echo":
		fmt.Println(strings.Join(os.Args[2:], " "))
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "guesttool:", err)
	os.Exit(1)
}

func alloc(mib int) {
	var keep [][]byte
	for i := 0; i < mib; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		keep = append(keep, b)
	}
	fmt.Printf("allocated %d MiB\n", len(keep))
	time.Sleep(time.Hour)
}
