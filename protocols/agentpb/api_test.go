package agentpb_test

import (
	"context"
	"net"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/typespb"
)

// agentRPCs are the methods a Kata host (1.x, 2.x or 3.x) may call.
var agentRPCs = map[string][2]string{
	"CreateContainer":                {"CreateContainerRequest", "google.protobuf.Empty"},
	"StartContainer":                 {"StartContainerRequest", "google.protobuf.Empty"},
	"RemoveContainer":                {"RemoveContainerRequest", "google.protobuf.Empty"},
	"ExecProcess":                    {"ExecProcessRequest", "google.protobuf.Empty"},
	"SignalProcess":                  {"SignalProcessRequest", "google.protobuf.Empty"},
	"WaitProcess":                    {"WaitProcessRequest", "WaitProcessResponse"},
	"UpdateContainer":                {"UpdateContainerRequest", "google.protobuf.Empty"},
	"UpdateEphemeralMounts":          {"UpdateEphemeralMountsRequest", "google.protobuf.Empty"},
	"StatsContainer":                 {"StatsContainerRequest", "StatsContainerResponse"},
	"PauseContainer":                 {"PauseContainerRequest", "google.protobuf.Empty"},
	"ResumeContainer":                {"ResumeContainerRequest", "google.protobuf.Empty"},
	"RemoveStaleVirtiofsShareMounts": {"RemoveStaleVirtiofsShareMountsRequest", "google.protobuf.Empty"},
	"WriteStdin":                     {"WriteStreamRequest", "WriteStreamResponse"},
	"ReadStdout":                     {"ReadStreamRequest", "ReadStreamResponse"},
	"ReadStderr":                     {"ReadStreamRequest", "ReadStreamResponse"},
	"CloseStdin":                     {"CloseStdinRequest", "google.protobuf.Empty"},
	"TtyWinResize":                   {"TtyWinResizeRequest", "google.protobuf.Empty"},
	"UpdateInterface":                {"UpdateInterfaceRequest", "types.Interface"},
	"UpdateRoutes":                   {"UpdateRoutesRequest", "Routes"},
	"ListInterfaces":                 {"ListInterfacesRequest", "Interfaces"},
	"ListRoutes":                     {"ListRoutesRequest", "Routes"},
	"AddARPNeighbors":                {"AddARPNeighborsRequest", "google.protobuf.Empty"},
	"GetIPTables":                    {"GetIPTablesRequest", "GetIPTablesResponse"},
	"SetIPTables":                    {"SetIPTablesRequest", "SetIPTablesResponse"},
	"GetMetrics":                     {"GetMetricsRequest", "Metrics"},
	"CreateSandbox":                  {"CreateSandboxRequest", "google.protobuf.Empty"},
	"DestroySandbox":                 {"DestroySandboxRequest", "google.protobuf.Empty"},
	"OnlineCPUMem":                   {"OnlineCPUMemRequest", "google.protobuf.Empty"},
	"ReseedRandomDev":                {"ReseedRandomDevRequest", "google.protobuf.Empty"},
	"GetGuestDetails":                {"GuestDetailsRequest", "GuestDetailsResponse"},
	"MemHotplugByProbe":              {"MemHotplugByProbeRequest", "google.protobuf.Empty"},
	"SetGuestDateTime":               {"SetGuestDateTimeRequest", "google.protobuf.Empty"},
	"CopyFile":                       {"CopyFileRequest", "google.protobuf.Empty"},
	"GetOOMEvent":                    {"GetOOMEventRequest", "OOMEvent"},
	"AddSwap":                        {"AddSwapRequest", "google.protobuf.Empty"},
	"GetVolumeStats":                 {"VolumeStatsRequest", "VolumeStatsResponse"},
	"ResizeVolume":                   {"ResizeVolumeRequest", "google.protobuf.Empty"},
	"SetPolicy":                      {"SetPolicyRequest", "google.protobuf.Empty"},
	"ListProcesses":                  {"ListProcessesRequest", "ListProcessesResponse"},
	"StartTracing":                   {"StartTracingRequest", "google.protobuf.Empty"},
	"StopTracing":                    {"StopTracingRequest", "google.protobuf.Empty"},
	"MemAgentMemcgSet":               {"MemAgentMemcgConfig", "google.protobuf.Empty"},
	"MemAgentCompactSet":             {"MemAgentCompactConfig", "google.protobuf.Empty"},
}

func qualify(name string) protoreflect.FullName {
	if name == "google.protobuf.Empty" || name == "types.Interface" {
		return protoreflect.FullName(name)
	}
	return protoreflect.FullName("grpc." + name)
}

func service(t *testing.T, name protoreflect.FullName) protoreflect.ServiceDescriptor {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		t.Fatalf("%s is a %T, not a service", name, d)
	}
	return sd
}

func TestAgentServiceDeclaresKataRPCs(t *testing.T) {
	if len(agentRPCs) != 43 {
		t.Fatalf("expected table of 43 RPCs, have %d", len(agentRPCs))
	}
	sd := service(t, "grpc.AgentService")
	for name, io := range agentRPCs {
		m := sd.Methods().ByName(protoreflect.Name(name))
		if m == nil {
			t.Errorf("AgentService lacks %s", name)
			continue
		}
		if got, want := m.Input().FullName(), qualify(io[0]); got != want {
			t.Errorf("%s input = %s, want %s", name, got, want)
		}
		if got, want := m.Output().FullName(), qualify(io[1]); got != want {
			t.Errorf("%s output = %s, want %s", name, got, want)
		}
		if m.IsStreamingClient() || m.IsStreamingServer() {
			t.Errorf("%s must be unary", name)
		}
	}
	// The gRPC descriptor must carry every method too, under Kata's path.
	if got := agentpb.AgentService_ServiceDesc.ServiceName; got != "grpc.AgentService" {
		t.Errorf("gRPC service name = %q", got)
	}
	grpcMethods := map[string]bool{}
	for _, m := range agentpb.AgentService_ServiceDesc.Methods {
		grpcMethods[m.MethodName] = true
	}
	for name := range agentRPCs {
		if !grpcMethods[name] {
			t.Errorf("gRPC descriptor lacks %s", name)
		}
	}
	if agentpb.AgentService_CreateContainer_FullMethodName != "/grpc.AgentService/CreateContainer" {
		t.Errorf("CreateContainer path = %q", agentpb.AgentService_CreateContainer_FullMethodName)
	}
}

func TestHealthService(t *testing.T) {
	sd := service(t, "grpc.Health")
	want := map[string][2]string{
		"Check":   {"grpc.CheckRequest", "grpc.HealthCheckResponse"},
		"Version": {"grpc.CheckRequest", "grpc.VersionCheckResponse"},
	}
	if sd.Methods().Len() != len(want) {
		t.Errorf("Health has %d methods, want %d", sd.Methods().Len(), len(want))
	}
	for name, io := range want {
		m := sd.Methods().ByName(protoreflect.Name(name))
		if m == nil {
			t.Fatalf("Health lacks %s", name)
		}
		if string(m.Input().FullName()) != io[0] || string(m.Output().FullName()) != io[1] {
			t.Errorf("%s: %s -> %s, want %s -> %s", name, m.Input().FullName(), m.Output().FullName(), io[0], io[1])
		}
	}
	if agentpb.Health_Check_FullMethodName != "/grpc.Health/Check" {
		t.Errorf("Check path = %q", agentpb.Health_Check_FullMethodName)
	}
	if agentpb.HealthCheckResponse_SERVING != 1 || agentpb.HealthCheckResponse_NOT_SERVING != 2 {
		t.Errorf("ServingStatus values differ from Kata's")
	}
}

// TestKataFieldNumbers pins field numbers and kinds to those of Kata's agent.proto,
// oci.proto, types.proto and csi.proto: any drift breaks host runtimes.
func TestKataFieldNumbers(t *testing.T) {
	tests := []struct {
		msg   protoreflect.FullName
		field protoreflect.Name
		num   protoreflect.FieldNumber
		kind  protoreflect.Kind
		list  bool
	}{
		{"grpc.CreateContainerRequest", "container_id", 1, protoreflect.StringKind, false},
		{"grpc.CreateContainerRequest", "string_user", 3, protoreflect.MessageKind, false},
		{"grpc.CreateContainerRequest", "devices", 4, protoreflect.MessageKind, true},
		{"grpc.CreateContainerRequest", "storages", 5, protoreflect.MessageKind, true},
		{"grpc.CreateContainerRequest", "OCI", 6, protoreflect.MessageKind, false},
		{"grpc.CreateContainerRequest", "sandbox_pidns", 7, protoreflect.BoolKind, false},
		{"grpc.CreateContainerRequest", "shared_mounts", 8, protoreflect.MessageKind, true},
		{"grpc.ExecProcessRequest", "process", 4, protoreflect.MessageKind, false},
		{"grpc.RemoveContainerRequest", "timeout", 2, protoreflect.Uint32Kind, false},
		{"grpc.SignalProcessRequest", "signal", 3, protoreflect.Uint32Kind, false},
		{"grpc.WaitProcessResponse", "status", 1, protoreflect.Int32Kind, false},
		{"grpc.ReadStreamRequest", "len", 3, protoreflect.Uint32Kind, false},
		{"grpc.WriteStreamRequest", "data", 3, protoreflect.BytesKind, false},
		{"grpc.TtyWinResizeRequest", "column", 4, protoreflect.Uint32Kind, false},
		{"grpc.CreateSandboxRequest", "dns", 2, protoreflect.StringKind, true},
		{"grpc.CreateSandboxRequest", "sandbox_id", 5, protoreflect.StringKind, false},
		{"grpc.CreateSandboxRequest", "kernel_modules", 7, protoreflect.MessageKind, true},
		{"grpc.ReseedRandomDevRequest", "data", 2, protoreflect.BytesKind, false},
		{"grpc.GuestDetailsResponse", "agent_details", 2, protoreflect.MessageKind, false},
		{"grpc.AgentDetails", "supports_seccomp", 5, protoreflect.BoolKind, false},
		{"grpc.Storage", "driver", 1, protoreflect.StringKind, false},
		{"grpc.Storage", "mount_point", 6, protoreflect.StringKind, false},
		{"grpc.Storage", "fs_group", 7, protoreflect.MessageKind, false},
		{"grpc.FSGroup", "group_id", 2, protoreflect.Uint32Kind, false},
		{"grpc.FSGroup", "group_change_policy", 3, protoreflect.EnumKind, false},
		{"grpc.Device", "container_path", 4, protoreflect.StringKind, false},
		{"grpc.CopyFileRequest", "offset", 7, protoreflect.Int64Kind, false},
		{"grpc.CopyFileRequest", "uid", 5, protoreflect.Int32Kind, false},
		{"grpc.SetGuestDateTimeRequest", "Usec", 2, protoreflect.Int64Kind, false},
		{"grpc.MemoryStats", "stats", 6, protoreflect.MessageKind, true},
		{"grpc.ListProcessesResponse", "process_list", 1, protoreflect.BytesKind, false},
		{"grpc.AddSwapRequest", "PCIPath", 1, protoreflect.Uint32Kind, true},
		{"grpc.ResizeVolumeRequest", "size", 2, protoreflect.Uint64Kind, false},
		{"grpc.Spec", "Process", 2, protoreflect.MessageKind, false},
		{"grpc.Spec", "Root", 3, protoreflect.MessageKind, false},
		{"grpc.Spec", "Mounts", 5, protoreflect.MessageKind, true},
		{"grpc.Spec", "Annotations", 7, protoreflect.MessageKind, true},
		{"grpc.Spec", "Linux", 8, protoreflect.MessageKind, false},
		{"grpc.Spec", "Windows", 10, protoreflect.MessageKind, false},
		{"grpc.Process", "Args", 4, protoreflect.StringKind, true},
		{"grpc.Process", "OOMScoreAdj", 11, protoreflect.Int64Kind, false},
		{"grpc.Linux", "Resources", 4, protoreflect.MessageKind, false},
		{"grpc.Linux", "MaskedPaths", 10, protoreflect.StringKind, true},
		{"grpc.Linux", "IntelRdt", 13, protoreflect.MessageKind, false},
		{"grpc.LinuxMemory", "Limit", 1, protoreflect.Int64Kind, false},
		{"grpc.LinuxMemory", "Swappiness", 6, protoreflect.Uint64Kind, false},
		{"grpc.LinuxCPU", "Quota", 2, protoreflect.Int64Kind, false},
		{"grpc.LinuxSyscall", "errnoret", 3, protoreflect.Uint32Kind, false},
		{"grpc.Hooks", "StartContainer", 6, protoreflect.MessageKind, true},
		{"grpc.VolumeUsage", "unit", 4, protoreflect.EnumKind, false},
		{"grpc.VolumeCondition", "message", 2, protoreflect.StringKind, false},
		{"types.Interface", "IPAddresses", 3, protoreflect.MessageKind, true},
		{"types.Interface", "mtu", 4, protoreflect.Uint64Kind, false},
		{"types.Interface", "hwAddr", 5, protoreflect.StringKind, false},
		{"types.Interface", "raw_flags", 8, protoreflect.Uint32Kind, false},
		{"types.Route", "dest", 1, protoreflect.StringKind, false},
		{"types.Route", "gateway", 2, protoreflect.StringKind, false},
		{"types.Route", "device", 3, protoreflect.StringKind, false},
		{"types.Route", "source", 4, protoreflect.StringKind, false},
		{"types.Route", "scope", 5, protoreflect.Uint32Kind, false},
		{"types.Route", "family", 6, protoreflect.EnumKind, false},
		{"types.Route", "flags", 7, protoreflect.Uint32Kind, false},
		{"types.ARPNeighbor", "toIPAddress", 1, protoreflect.MessageKind, false},
		{"types.ARPNeighbor", "state", 4, protoreflect.Int32Kind, false},
		{"types.IPAddress", "family", 1, protoreflect.EnumKind, false},
		{"grpc.CreateContainerRequest", "stdout_port", 10, protoreflect.Uint32Kind, false},
		{"grpc.ExecProcessRequest", "stderr_port", 7, protoreflect.Uint32Kind, false},
		{"grpc.AgentDetails", "extra_features", 6, protoreflect.StringKind, true},
		{"grpc.MemAgentMemcgConfig", "swappiness_max", 3, protoreflect.Uint32Kind, false},
		{"grpc.MemAgentMemcgConfig", "eviction_run_aging_count_min", 7, protoreflect.Uint64Kind, false},
		{"grpc.MemAgentCompactConfig", "compact_sec_max", 5, protoreflect.Int64Kind, false},
		{"grpc.MemAgentCompactConfig", "compact_force_times", 8, protoreflect.Uint64Kind, false},
	}
	// Kata declares every mem-agent setting proto3 optional: an unset field
	// must stay distinguishable from a zero one.
	for _, name := range []protoreflect.FullName{"grpc.MemAgentMemcgConfig", "grpc.MemAgentCompactConfig"} {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(name)
		if err != nil {
			t.Fatalf("find %s: %v", name, err)
		}
		fields := mt.Descriptor().Fields()
		for i := 0; i < fields.Len(); i++ {
			if fd := fields.Get(i); !fd.HasPresence() {
				t.Errorf("%s.%s is not optional", name, fd.Name())
			}
		}
	}
	for _, tc := range tests {
		t.Run(string(tc.msg)+"."+string(tc.field), func(t *testing.T) {
			mt, err := protoregistry.GlobalTypes.FindMessageByName(tc.msg)
			if err != nil {
				t.Fatalf("find %s: %v", tc.msg, err)
			}
			fd := mt.Descriptor().Fields().ByName(tc.field)
			if fd == nil {
				t.Fatalf("%s has no field %s", tc.msg, tc.field)
			}
			if fd.Number() != tc.num || fd.Kind() != tc.kind || (fd.Cardinality() == protoreflect.Repeated) != tc.list {
				t.Errorf("got number %d kind %v list %v, want %d %v %v",
					fd.Number(), fd.Kind(), fd.Cardinality() == protoreflect.Repeated, tc.num, tc.kind, tc.list)
			}
		})
	}
}

type wireField struct {
	num protowire.Number
	typ protowire.Type
}

// topLevelFields decodes the outermost fields of an encoded message.
func topLevelFields(t *testing.T, b []byte) []wireField {
	t.Helper()
	var out []wireField
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			t.Fatalf("bad field %d: %v", num, protowire.ParseError(m))
		}
		b = b[m:]
		out = append(out, wireField{num, typ})
	}
	return out
}

func TestWireEncoding(t *testing.T) {
	tests := []struct {
		name string
		msg  proto.Message
		want []wireField
	}{
		{"CreateContainerRequest.OCI", &agentpb.CreateContainerRequest{OCI: &agentpb.Spec{Version: "1.0.2"}},
			[]wireField{{6, protowire.BytesType}}},
		{"Storage.mount_point", &agentpb.Storage{MountPoint: "/run/kata-containers/shared"},
			[]wireField{{6, protowire.BytesType}}},
		{"Interface.IPAddresses", &typespb.Interface{IPAddresses: []*typespb.IPAddress{{Address: "10.0.0.2"}, {Address: "fe80::1"}}},
			[]wireField{{3, protowire.BytesType}, {3, protowire.BytesType}}},
		{"Interface.mtu", &typespb.Interface{Mtu: 1500},
			[]wireField{{4, protowire.VarintType}}},
		{"Route fields", &typespb.Route{Dest: "0.0.0.0/0", Gateway: "10.0.0.1", Device: "eth0", Source: "10.0.0.2", Scope: 253, Family: typespb.IPFamily_v6, Flags: 4},
			[]wireField{{1, protowire.BytesType}, {2, protowire.BytesType}, {3, protowire.BytesType}, {4, protowire.BytesType},
				{5, protowire.VarintType}, {6, protowire.VarintType}, {7, protowire.VarintType}}},
		{"WaitProcessResponse.status", &agentpb.WaitProcessResponse{Status: 137},
			[]wireField{{1, protowire.VarintType}}},
		{"ReseedRandomDevRequest.data", &agentpb.ReseedRandomDevRequest{Data: []byte{1, 2, 3}},
			[]wireField{{2, protowire.BytesType}}},
		{"LinuxMemory.Limit", &agentpb.LinuxMemory{Limit: 32 << 20},
			[]wireField{{1, protowire.VarintType}}},
		{"SetGuestDateTimeRequest", &agentpb.SetGuestDateTimeRequest{Sec: 1, Usec: 2},
			[]wireField{{1, protowire.VarintType}, {2, protowire.VarintType}}},
		{"MemHotplugByProbeRequest packed", &agentpb.MemHotplugByProbeRequest{MemHotplugProbeAddr: []uint64{1, 2}},
			[]wireField{{1, protowire.BytesType}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			got := topLevelFields(t, b)
			if len(got) != len(tc.want) {
				t.Fatalf("fields = %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("field %d = %v, want %v", i, got[i], tc.want[i])
				}
			}
			back := tc.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(b, back); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(back, tc.msg) {
				t.Errorf("round trip changed the message: %v != %v", back, tc.msg)
			}
		})
	}
}

// TestUnimplementedOverGRPC checks every declared RPC is routed under Kata's
// method path and answers Unimplemented until a server implements it.
func TestUnimplementedOverGRPC(t *testing.T) {
	lis, err := net.Listen("unix", t.TempDir()+"/g.sock")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	agentpb.RegisterAgentServiceServer(s, agentpb.UnimplementedAgentServiceServer{})
	go s.Serve(lis)
	defer s.Stop()
	cc, err := grpc.NewClient("unix://"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for name, io := range agentRPCs {
		in, err := protoregistry.GlobalTypes.FindMessageByName(qualify(io[0]))
		if err != nil {
			t.Fatal(err)
		}
		out, err := protoregistry.GlobalTypes.FindMessageByName(qualify(io[1]))
		if err != nil {
			t.Fatal(err)
		}
		err = cc.Invoke(context.Background(), "/grpc.AgentService/"+name, in.New().Interface(), out.New().Interface())
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("%s: %v, want Unimplemented", name, err)
		}
	}
}

type ttrpcHealth struct{}

func (ttrpcHealth) Check(context.Context, *agentpb.CheckRequest) (*agentpb.HealthCheckResponse, error) {
	return &agentpb.HealthCheckResponse{Status: agentpb.HealthCheckResponse_SERVING}, nil
}

func (ttrpcHealth) Version(context.Context, *agentpb.CheckRequest) (*agentpb.VersionCheckResponse, error) {
	return &agentpb.VersionCheckResponse{AgentVersion: "test", GrpcVersion: "1"}, nil
}

// TestTTRPCStubs checks the ttrpc stubs use Kata's service and method names.
func TestTTRPCStubs(t *testing.T) {
	lis, err := net.Listen("unix", t.TempDir()+"/t.sock")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agentpb.RegisterTTRPCHealthService(s, ttrpcHealth{})
	go s.Serve(context.Background(), lis)
	defer s.Close()
	conn, err := net.Dial("unix", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	resp, err := agentpb.NewTTRPCHealthClient(c).Check(context.Background(), &agentpb.CheckRequest{})
	if err != nil || resp.Status != agentpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check = %v, %v", resp, err)
	}
	// Same method path as a Kata 2.x host would use.
	var v agentpb.VersionCheckResponse
	if err := c.Call(context.Background(), "grpc.Health", "Version", &agentpb.CheckRequest{}, &v); err != nil || v.AgentVersion != "test" {
		t.Fatalf("Version = %v, %v", &v, err)
	}
	// AgentService is not registered here: ttrpc must say so, not succeed.
	err = c.Call(context.Background(), "grpc.AgentService", "CreateContainer", &agentpb.CreateContainerRequest{}, &emptypb.Empty{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unregistered service: %v, want Unimplemented", err)
	}
}
