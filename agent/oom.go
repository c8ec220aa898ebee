package agent

import (
	"context"
	"sync"

	"github.com/kguest/kguest/protocols/agentpb"
)

// maxPendingOOM bounds the OOM events kept for a host that does not poll.
const maxPendingOOM = 1024

// oomQueue holds OOM events until the host's GetOOMEvent long-poll takes
// them.
type oomQueue struct {
	mu      sync.Mutex
	ids     []string
	changed chan struct{}
}

func newOOMQueue() *oomQueue { return &oomQueue{changed: make(chan struct{})} }

func (q *oomQueue) push(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ids) >= maxPendingOOM {
		q.ids = q.ids[1:]
	}
	q.ids = append(q.ids, id)
	close(q.changed)
	q.changed = make(chan struct{})
}

func (q *oomQueue) pop(ctx context.Context) (string, error) {
	for {
		q.mu.Lock()
		if len(q.ids) > 0 {
			id := q.ids[0]
			q.ids = q.ids[1:]
			q.mu.Unlock()
			return id, nil
		}
		ch := q.changed
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// GetOOMEvent waits until a container's process is killed by the OOM killer
// and returns the container's id.
func (a *Agent) GetOOMEvent(ctx context.Context, _ *agentpb.GetOOMEventRequest) (*agentpb.OOMEvent, error) {
	s, err := a.sandbox()
	if err != nil {
		return nil, err
	}
	id, err := s.oom.pop(ctx)
	if err != nil {
		return nil, containerStatus(err)
	}
	return &agentpb.OOMEvent{ContainerId: id}, nil
}
