// Command osbuilder builds guest images: rootfs trees, initrds, DAX disk
// images, kernel configs and kernels.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"

	"github.com/kguest/kguest/internal/version"
)

// command is one osbuilder subcommand. Each lives in its own file and
// registers itself from init().
type command struct {
	name    string
	summary string
	// run parses args (without the subcommand name) and does the work.
	run func(args []string) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// errUsage marks an error caused by bad command-line use (exit code 2).
var errUsage = errors.New("usage error")

func usage() {
	fmt.Fprintf(os.Stderr, "osbuilder %s: build guest images for kata-agent\n\nUsage: osbuilder COMMAND [OPTIONS]\n\nCommands:\n", version.Version)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'osbuilder COMMAND --help' for a command's options and examples.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	switch os.Args[1] {
	case "-h", "--help", "help":
		usage()
		return
	case "--version", "version":
		fmt.Println(version.Version)
		return
	}
	c, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "osbuilder: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := c.run(os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "osbuilder %s: %v\n", c.name, err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
