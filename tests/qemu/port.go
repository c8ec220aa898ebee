package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// agentPortID is the QEMU device id of the agent's virtserialport.
const agentPortID = "agentport0"

// portState follows the guest side of the agent's virtio-serial port from
// QEMU's VSERPORT_CHANGE events.
type portState struct {
	mu      sync.Mutex
	open    bool
	changes int           // number of events seen
	changed chan struct{} // closed and replaced on each event
}

func (p *portState) set(open bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = open
	p.changes++
	close(p.changed)
	p.changed = make(chan struct{})
}

// watchEvents reads QMP events from the event monitor for the VM's life.
func (vm *VM) watchEvents(ctx context.Context) error {
	vm.port.changed = make(chan struct{})
	q, err := DialQMP(ctx, vm.eventSock)
	if err != nil {
		return err
	}
	q.conn.SetDeadline(time.Time{})
	go func() {
		defer q.Close()
		for {
			line, err := q.r.ReadBytes('\n')
			if err != nil {
				return
			}
			var ev struct {
				Event string `json:"event"`
				Data  struct {
					ID   string `json:"id"`
					Open bool   `json:"open"`
				} `json:"data"`
			}
			if json.Unmarshal(line, &ev) == nil && ev.Event == "VSERPORT_CHANGE" && ev.Data.ID == agentPortID {
				vm.port.set(ev.Data.Open)
			}
		}
	}()
	return nil
}

// AgentPortOpen reports whether the guest has the agent's port open, and how
// many open/close changes QEMU reported so far.
func (vm *VM) AgentPortOpen() (open bool, changes int) {
	vm.port.mu.Lock()
	defer vm.port.mu.Unlock()
	return vm.port.open, vm.port.changes
}

// WaitAgentPort waits until the guest has opened the agent's port after at
// least `after` changes (0: any open). Data sent to a port the guest has
// not opened waits in QEMU's socket, and a guest that opens and closes the
// port may drop part of it; waiting keeps a yamux session from starting on
// a torn stream.
func (vm *VM) WaitAgentPort(ctx context.Context, after int) error {
	for {
		vm.port.mu.Lock()
		open, n, ch := vm.port.open, vm.port.changes, vm.port.changed
		vm.port.mu.Unlock()
		if open && n > after {
			return nil
		}
		select {
		case <-ch:
		case <-vm.done:
			return fmt.Errorf("qemu exited before the guest opened %s", AgentPortName)
		case <-ctx.Done():
			return fmt.Errorf("guest did not open %s: %w", AgentPortName, ctx.Err())
		}
	}
}
