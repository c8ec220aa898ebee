package agent

import (
	"runtime/debug"
	"sync"
)

// memReleaser gives the heap that removals freed back to the guest. The Go
// runtime keeps freed pages up to its heap goal and returns the rest only
// slowly, so after the containers of a busy moment are gone the agent would
// stay at its peak; debug.FreeOSMemory collects and returns it at once.
// Requests coalesce: one release runs at a time in the background (never in
// the RPC's path), and a request that arrives while one runs gets one more
// release after it, so the last removal's garbage is never left behind.
type memReleaser struct {
	free func() // debug.FreeOSMemory; tests count calls

	mu      sync.Mutex
	running bool
	again   bool
}

var releaser = &memReleaser{free: debug.FreeOSMemory}

// request schedules a release.
func (r *memReleaser) request() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		r.again = true
		return
	}
	r.running = true
	go r.run()
}

func (r *memReleaser) run() {
	for {
		r.free()
		r.mu.Lock()
		if !r.again {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.again = false
		r.mu.Unlock()
	}
}
