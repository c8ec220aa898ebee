package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/kguest/kguest/protocols/agentpb"
)

// unimplementedAgent implements no RPC: every call must reach the
// Unimplemented embed, which names the method, rather than fail as an
// unknown service or method.
type unimplementedAgent struct {
	agentpb.UnimplementedAgentServiceServer
}

type unimplementedHealth struct {
	agentpb.UnimplementedHealthServer
}

// The 43 RPCs Kata hosts (1.x to 3.x) call.
var kataRPCs = []string{
	"CreateContainer", "StartContainer", "RemoveContainer", "ExecProcess", "SignalProcess", "WaitProcess",
	"UpdateContainer", "UpdateEphemeralMounts", "StatsContainer", "PauseContainer", "ResumeContainer",
	"RemoveStaleVirtiofsShareMounts", "WriteStdin", "ReadStdout", "ReadStderr", "CloseStdin", "TtyWinResize",
	"UpdateInterface", "UpdateRoutes", "ListInterfaces", "ListRoutes", "AddARPNeighbors", "GetIPTables",
	"SetIPTables", "GetMetrics", "CreateSandbox", "DestroySandbox", "OnlineCPUMem", "ReseedRandomDev",
	"GetGuestDetails", "MemHotplugByProbe", "SetGuestDateTime", "CopyFile", "GetOOMEvent", "AddSwap",
	"GetVolumeStats", "ResizeVolume", "SetPolicy", "ListProcesses", "StartTracing", "StopTracing",
	"MemAgentMemcgSet", "MemAgentCompactSet",
}

func serviceDescriptor(t *testing.T, name protoreflect.FullName) protoreflect.ServiceDescriptor {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		t.Fatalf("%s is a %T", name, d)
	}
	return sd
}

// serveAgent serves agent on a unix socket until the test ends and returns
// the socket and a gRPC client connected to it.
func serveAgent(t *testing.T, agent AgentService) (string, *grpc.ClientConn) {
	t.Helper()
	srv := New(Options{Logger: slog.New(slog.DiscardHandler)})
	srv.Register(agent, unimplementedHealth{})
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	gc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gc.Close() })
	return sock, gc
}

func TestEveryRPCRegisteredOnBothProtocols(t *testing.T) {
	sock, gc := serveAgent(t, unimplementedAgent{})
	tconn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tc := ttrpc.NewClient(tconn)
	defer tc.Close()

	agentSvc := serviceDescriptor(t, "grpc.AgentService")
	declared := map[string]bool{}
	for i := 0; i < agentSvc.Methods().Len(); i++ {
		declared[string(agentSvc.Methods().Get(i).Name())] = true
	}
	for _, m := range kataRPCs {
		if !declared[m] {
			t.Errorf("grpc.AgentService does not declare %s", m)
		}
	}

	ctx := ctxTimeout(t)
	calls := 0
	for _, svc := range []protoreflect.ServiceDescriptor{agentSvc, serviceDescriptor(t, "grpc.Health")} {
		for i := 0; i < svc.Methods().Len(); i++ {
			md := svc.Methods().Get(i)
			if md.IsStreamingClient() || md.IsStreamingServer() {
				t.Errorf("%s is a streaming RPC; the agent API has none", md.FullName())
				continue
			}
			// The Unimplemented embed answers with exactly this; an
			// unregistered service or method answers otherwise.
			want := fmt.Sprintf("method %s not implemented", md.Name())
			service, method := string(svc.FullName()), string(md.Name())
			protos := map[string]func() error{
				"grpc": func() error {
					return gc.Invoke(ctx, "/"+service+"/"+method, dynamicpb.NewMessage(md.Input()), dynamicpb.NewMessage(md.Output()))
				},
				"ttrpc": func() error {
					return tc.Call(ctx, service, method, dynamicpb.NewMessage(md.Input()), dynamicpb.NewMessage(md.Output()))
				},
			}
			for proto, call := range protos {
				err := call()
				calls++
				st, ok := status.FromError(err)
				if !ok || st.Code() != codes.Unimplemented || st.Message() != want {
					t.Errorf("%s over %s: %v, want Unimplemented %q", md.FullName(), proto, err, want)
				}
			}
		}
	}
	if calls < 2*(len(kataRPCs)+2) {
		t.Errorf("only %d calls made", calls)
	}

	// An unregistered method fails differently on both protocols, so the
	// check above tells registered from unregistered.
	err = gc.Invoke(ctx, "/grpc.AgentService/NoSuchRPC", dynamicpb.NewMessage(agentSvc.Methods().Get(0).Input()), dynamicpb.NewMessage(agentSvc.Methods().Get(0).Output()))
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() == "method NoSuchRPC not implemented" {
		t.Errorf("grpc unknown method: %v", err)
	}
	err = tc.Call(ctx, "grpc.AgentService", "NoSuchRPC", dynamicpb.NewMessage(agentSvc.Methods().Get(0).Input()), dynamicpb.NewMessage(agentSvc.Methods().Get(0).Output()))
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() == "method NoSuchRPC not implemented" || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ttrpc unknown method: %v", err)
	}
}
