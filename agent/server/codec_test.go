package server

import (
	"context"
	"testing"

	"github.com/kguest/kguest/protocols/agentpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// seccompAgent records the seccomp profile of a CreateContainer request.
type seccompAgent struct {
	unimplementedAgent
	got chan *agentpb.LinuxSeccomp
}

func (a seccompAgent) CreateContainer(_ context.Context, req *agentpb.CreateContainerRequest) (*emptypb.Empty, error) {
	a.got <- req.GetOCI().GetLinux().GetSeccomp()
	return &emptypb.Empty{}, nil
}

// rawCodec sends pre-encoded bytes, as a Kata 1.x host's generated code
// would have encoded them.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

// TestGRPCReadsKata1xSeccomp sends a CreateContainerRequest whose seccomp
// profile has the Kata 1.x layout (Syscalls as field 3, what is now Flags)
// over gRPC: the service sees the syscall rules.
func TestGRPCReadsKata1xSeccomp(t *testing.T) {
	agent := seccompAgent{got: make(chan *agentpb.LinuxSeccomp, 1)}
	_, gc := serveAgent(t, agent)

	bytesField := func(b []byte, num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	arg := protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 2114060288)
	arg = bytesField(arg, 4, []byte("SCMP_CMP_MASKED_EQ"))
	clone := bytesField(nil, 1, []byte("clone"))
	clone = bytesField(clone, 2, []byte("SCMP_ACT_ALLOW"))
	clone = bytesField(clone, 3, arg) // 1.x LinuxSyscall.Args
	sec := bytesField(nil, 1, []byte("SCMP_ACT_ERRNO"))
	sec = bytesField(sec, 3, clone) // 1.x LinuxSeccomp.Syscalls
	req := bytesField(nil, 1, []byte("c1"))
	req = bytesField(req, 6, bytesField(nil, 8, bytesField(nil, 8, sec))) // OCI.Linux.Seccomp

	if err := gc.Invoke(ctxTimeout(t), "/grpc.AgentService/CreateContainer", req, new(emptypb.Empty), grpc.ForceCodecV2(rawCodec{})); err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	got := <-agent.got
	if len(got.GetFlags()) != 0 || len(got.GetSyscalls()) != 1 {
		t.Fatalf("profile %v: want one syscall rule and no flags", got)
	}
	sc := got.GetSyscalls()[0]
	if len(sc.GetNames()) != 1 || sc.GetNames()[0] != "clone" || sc.GetAction() != "SCMP_ACT_ALLOW" ||
		len(sc.GetArgs()) != 1 || sc.GetArgs()[0].GetValue() != 2114060288 {
		t.Errorf("rule %v", sc)
	}

	// Current-layout requests are read as they are.
	cur := &agentpb.CreateContainerRequest{ContainerId: "c2", OCI: &agentpb.Spec{Linux: &agentpb.Linux{Seccomp: &agentpb.LinuxSeccomp{
		DefaultAction: "SCMP_ACT_ERRNO", Flags: []string{"SECCOMP_FILTER_FLAG_LOG"},
		Syscalls: []*agentpb.LinuxSyscall{{Names: []string{"read"}, Action: "SCMP_ACT_ALLOW"}},
	}}}}
	if _, err := agentpb.NewAgentServiceClient(gc).CreateContainer(ctxTimeout(t), cur); err != nil {
		t.Fatal(err)
	}
	if got := <-agent.got; !proto.Equal(got, cur.OCI.Linux.Seccomp) {
		t.Errorf("current profile read as %v", got)
	}
}
