package agent

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMemReleaserCoalesces checks that requests made while a release runs
// give exactly one more release after it, and that none is lost.
func TestMemReleaserCoalesces(t *testing.T) {
	var calls atomic.Int32
	entered := make(chan struct{}, 10)
	proceed := make(chan struct{})
	r := &memReleaser{free: func() {
		calls.Add(1)
		entered <- struct{}{}
		<-proceed
	}}
	r.request()
	<-entered // the first release is running
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); r.request() }()
	}
	wg.Wait()
	proceed <- struct{}{} // finish the first
	<-entered             // the one coalesced re-run starts
	proceed <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		running := r.running
		r.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("releaser still running")
		}
		time.Sleep(time.Millisecond)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d releases for 21 requests (one during each), want 2", n)
	}
	// Idle again: a new request runs a new release.
	go func() { <-entered; proceed <- struct{}{} }()
	r.request()
	for calls.Load() != 3 {
		if time.Now().After(deadline) {
			t.Fatal("no release after a request on an idle releaser")
		}
		time.Sleep(time.Millisecond)
	}
}
