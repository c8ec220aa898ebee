package container

import "time"

// Forget drops an exec process whose exit status has been collected, as
// Kata's agent does after WaitProcess: hosts never refer to it again, and
// keeping it would hold its stdin pipe and any unread output until the
// container is removed. Its stdin is closed at once; it leaves the table
// once its output has been read to the end (a reader got EOF), or after grace, whichever comes
// first, so a reader still draining it loses nothing. The init process and
// processes still running are left alone.
func (c *Container) Forget(execID string, grace time.Duration) {
	if c.isInit(execID) {
		return
	}
	c.mu.Lock()
	p, ok := c.execs[execID]
	c.mu.Unlock()
	if !ok || !p.exit.Exited() {
		return
	}
	p.mu.Lock()
	if p.stdin != nil && !p.TTY {
		p.stdin.Close()
		p.stdin = nil
	}
	p.mu.Unlock()
	go func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		for _, st := range []*stream{p.stdout, p.stderr} {
			if st != nil && !st.waitDrained(t.C) {
				break
			}
		}
		c.mu.Lock()
		if c.execs[execID] == p {
			delete(c.execs, execID)
		}
		c.mu.Unlock()
		p.release()
	}()
}

// waitDrained blocks until a reader has been told the stream ended, or it
// was closed; false if stop fired first.
func (s *stream) waitDrained(stop <-chan time.Time) bool {
	for {
		s.mu.Lock()
		if s.closed || s.eofRead {
			s.mu.Unlock()
			return true
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-stop:
			return false
		}
	}
}
