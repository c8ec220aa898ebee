package reaper

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func start(t *testing.T) *Reaper {
	t.Helper()
	r, err := Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestExitCodes(t *testing.T) {
	r := start(t)
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"kill -KILL $$", 128 + 9},
		{"kill -TERM $$", 128 + 15},
	} {
		t.Run(tc.script, func(t *testing.T) {
			cmd := exec.Command("/bin/sh", "-c", tc.script)
			e, err := r.Start(cmd)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := 0; i < 2; i++ { // a second wait gives the same status
				got, err := e.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.want {
					t.Fatalf("wait %d: exit code %d, want %d", i, got, tc.want)
				}
			}
			_ = cmd.Wait()
		})
	}
}

func TestRunCapturesOutput(t *testing.T) {
	r := start(t)
	var out bytes.Buffer
	cmd := exec.Command("/bin/sh", "-c", "echo hi; exit 3")
	cmd.Stdout = &out
	code, err := r.Run(context.Background(), cmd)
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 || out.String() != "hi\n" {
		t.Fatalf("code %d output %q", code, out.String())
	}
}

// Orphans re-parented to the subreaper are reaped and leave no zombie.
func TestOrphansReaped(t *testing.T) {
	r := start(t)
	var out bytes.Buffer
	cmd := exec.Command("/bin/sh", "-c", "sleep 0.2 & echo $!")
	cmd.Stdout = &out
	if _, err := r.Run(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			t.Fatalf("orphan %d still present: %s", pid, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Many short children started concurrently all get their own status.
func TestConcurrentSpawns(t *testing.T) {
	r := start(t)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			code, err := r.Run(context.Background(), exec.Command("/bin/sh", "-c", "exit "+strconv.Itoa(i%5)))
			if err != nil {
				errs <- err
				return
			}
			if code != i%5 {
				errs <- &codeErr{code, i % 5}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

type codeErr struct{ got, want int }

func (e *codeErr) Error() string {
	return "exit code " + strconv.Itoa(e.got) + ", want " + strconv.Itoa(e.want)
}

// Hold keeps the reaper off while a library waits for its own child.
func TestHoldLetsCallerWait(t *testing.T) {
	r := start(t)
	err := r.Hold(func() error {
		cmd := exec.Command("/bin/sh", "-c", "exit 4")
		if err := cmd.Start(); err != nil {
			return err
		}
		err := cmd.Wait()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 4 {
			t.Errorf("own wait: %v %v", cmd.ProcessState, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOutputBesideReaper runs tools with Output and CombinedOutput while the
// reaper collects other children, as the agent runs resize2fs or
// iptables-save beside containers; exec.Cmd's own wait would race the reaper
// and fail with ECHILD.
func TestOutputBesideReaper(t *testing.T) {
	r := start(t)
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { // unregistered children keep the reaper busy
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			cmd := exec.Command("/bin/sh", "-c", "true & true")
			e, err := r.Start(cmd)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = e.Wait(context.Background())
			_ = cmd.Wait()
		}
	}()
	defer func() { close(stop); bg.Wait() }()

	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 25; j++ {
				out, err := Output(ctx, exec.Command("/bin/sh", "-c", "echo out; echo err >&2"))
				if err != nil || string(out) != "out\n" {
					t.Errorf("Output: %q, %v", out, err)
					return
				}
				out, err = CombinedOutput(ctx, exec.Command("/bin/sh", "-c", "echo out; echo err >&2; exit 4"))
				var ee *ExitError
				if !errors.As(err, &ee) || ee.Code != 4 || string(out) != "out\nerr\n" {
					t.Errorf("CombinedOutput: %q, %v, want exit status 4", out, err)
					return
				}
			}
		}()
	}
	wg.Wait()

	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := Output(tctx, exec.Command("/bin/sleep", "10")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Output past its deadline: %v, want DeadlineExceeded", err)
	}
}
