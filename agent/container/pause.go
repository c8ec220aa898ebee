package container

import (
	"os"
	"os/exec"
	"os/signal"

	"golang.org/x/sys/unix"
)

// pauseArg makes the agent binary (any binary importing this package) act
// as the pause process of a shared pid namespace.
const pauseArg = "__kguest_pause"

func init() {
	if len(os.Args) == 2 && os.Args[1] == pauseArg {
		pause()
	}
}

// PauseCommand is the pause process: it holds the sandbox's IPC and UTS
// namespaces, which the containers of a pod share, and is PID 1 of a new
// pid namespace that containers may share too. It does nothing but reap
// orphans.
func PauseCommand() *exec.Cmd {
	cmd := exec.Command("/proc/self/exe", pauseArg)
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS, Setsid: true}
	return cmd
}

func pause() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGHUP)
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
