// Command modinit is a minimal first init for booting the agent on a kernel
// whose virtio drivers are modules (such as Debian's own): it loads the
// modules listed in /etc/modinit.conf (one .ko path a line, in dependency
// order) and executes /sbin/init, the agent. Boot it with rdinit=/modinit.
package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	b, err := os.ReadFile("/etc/modinit.conf")
	if err != nil {
		fmt.Fprintln(os.Stderr, "modinit:", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if err := load(l); err != nil {
			fmt.Fprintf(os.Stderr, "modinit: %s: %v\n", l, err)
		}
	}
	err = syscall.Exec("/sbin/init", []string{"/sbin/init"}, os.Environ())
	fmt.Fprintln(os.Stderr, "modinit: exec /sbin/init:", err)
	for { // PID 1 must not exit.
		time.Sleep(time.Hour)
	}
}

func load(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
		return err
	}
	return nil
}
