package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
)

// vsockCheck starts a second agent listening on vsock://-1:PORT and checks
// it through vsock loopback (CID 1, VMADDR_CID_LOCAL) on both protocols.
func vsockCheck(port string) {
	agent := os.Getenv("GUESTTOOL_AGENT")
	if agent == "" {
		agent = "/sbin/init"
	}
	cmd := exec.Command(agent)
	cmd.Env = append(os.Environ(), "KATA_AGENT_SERVER_ADDR=vsock://-1:"+port)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		fail(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addr := "vsock://1:" + port
	for _, p := range []client.Protocol{client.TTRPC, client.GRPC} {
		if err := client.WaitReady(ctx, addr, p); err != nil {
			fail(err)
		}
		c, err := client.New(ctx, addr, p)
		if err != nil {
			fail(err)
		}
		d, err := c.GetGuestDetails(ctx, &agentpb.GuestDetailsRequest{MemBlockSize: true})
		if err != nil {
			fail(err)
		}
		c.Close()
		fmt.Printf("vsockcheck %s %s: SERVING version=%s init_daemon=%v\n", p, addr, d.GetAgentDetails().GetVersion(), d.GetAgentDetails().GetInitDaemon())
	}
}
