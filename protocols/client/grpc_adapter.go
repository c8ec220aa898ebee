package client

import (
	"context"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/typespb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// grpcAgent presents a gRPC AgentServiceClient with the ttrpc method set
// (no call options), so both protocols share one Client interface.
type grpcAgent struct{ c agentpb.AgentServiceClient }

var _ agentpb.TTRPCAgentServiceService = grpcAgent{}

func (g grpcAgent) CreateContainer(ctx context.Context, r *agentpb.CreateContainerRequest) (*emptypb.Empty, error) {
	return g.c.CreateContainer(ctx, r)
}

func (g grpcAgent) StartContainer(ctx context.Context, r *agentpb.StartContainerRequest) (*emptypb.Empty, error) {
	return g.c.StartContainer(ctx, r)
}

func (g grpcAgent) RemoveContainer(ctx context.Context, r *agentpb.RemoveContainerRequest) (*emptypb.Empty, error) {
	return g.c.RemoveContainer(ctx, r)
}

func (g grpcAgent) ExecProcess(ctx context.Context, r *agentpb.ExecProcessRequest) (*emptypb.Empty, error) {
	return g.c.ExecProcess(ctx, r)
}

func (g grpcAgent) SignalProcess(ctx context.Context, r *agentpb.SignalProcessRequest) (*emptypb.Empty, error) {
	return g.c.SignalProcess(ctx, r)
}

func (g grpcAgent) WaitProcess(ctx context.Context, r *agentpb.WaitProcessRequest) (*agentpb.WaitProcessResponse, error) {
	return g.c.WaitProcess(ctx, r)
}

func (g grpcAgent) ListProcesses(ctx context.Context, r *agentpb.ListProcessesRequest) (*agentpb.ListProcessesResponse, error) {
	return g.c.ListProcesses(ctx, r)
}

func (g grpcAgent) UpdateContainer(ctx context.Context, r *agentpb.UpdateContainerRequest) (*emptypb.Empty, error) {
	return g.c.UpdateContainer(ctx, r)
}

func (g grpcAgent) UpdateEphemeralMounts(ctx context.Context, r *agentpb.UpdateEphemeralMountsRequest) (*emptypb.Empty, error) {
	return g.c.UpdateEphemeralMounts(ctx, r)
}

func (g grpcAgent) StatsContainer(ctx context.Context, r *agentpb.StatsContainerRequest) (*agentpb.StatsContainerResponse, error) {
	return g.c.StatsContainer(ctx, r)
}

func (g grpcAgent) PauseContainer(ctx context.Context, r *agentpb.PauseContainerRequest) (*emptypb.Empty, error) {
	return g.c.PauseContainer(ctx, r)
}

func (g grpcAgent) ResumeContainer(ctx context.Context, r *agentpb.ResumeContainerRequest) (*emptypb.Empty, error) {
	return g.c.ResumeContainer(ctx, r)
}

func (g grpcAgent) RemoveStaleVirtiofsShareMounts(ctx context.Context, r *agentpb.RemoveStaleVirtiofsShareMountsRequest) (*emptypb.Empty, error) {
	return g.c.RemoveStaleVirtiofsShareMounts(ctx, r)
}

func (g grpcAgent) WriteStdin(ctx context.Context, r *agentpb.WriteStreamRequest) (*agentpb.WriteStreamResponse, error) {
	return g.c.WriteStdin(ctx, r)
}

func (g grpcAgent) ReadStdout(ctx context.Context, r *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	return g.c.ReadStdout(ctx, r)
}

func (g grpcAgent) ReadStderr(ctx context.Context, r *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	return g.c.ReadStderr(ctx, r)
}

func (g grpcAgent) CloseStdin(ctx context.Context, r *agentpb.CloseStdinRequest) (*emptypb.Empty, error) {
	return g.c.CloseStdin(ctx, r)
}

func (g grpcAgent) TtyWinResize(ctx context.Context, r *agentpb.TtyWinResizeRequest) (*emptypb.Empty, error) {
	return g.c.TtyWinResize(ctx, r)
}

func (g grpcAgent) UpdateInterface(ctx context.Context, r *agentpb.UpdateInterfaceRequest) (*typespb.Interface, error) {
	return g.c.UpdateInterface(ctx, r)
}

func (g grpcAgent) UpdateRoutes(ctx context.Context, r *agentpb.UpdateRoutesRequest) (*agentpb.Routes, error) {
	return g.c.UpdateRoutes(ctx, r)
}

func (g grpcAgent) ListInterfaces(ctx context.Context, r *agentpb.ListInterfacesRequest) (*agentpb.Interfaces, error) {
	return g.c.ListInterfaces(ctx, r)
}

func (g grpcAgent) ListRoutes(ctx context.Context, r *agentpb.ListRoutesRequest) (*agentpb.Routes, error) {
	return g.c.ListRoutes(ctx, r)
}

func (g grpcAgent) AddARPNeighbors(ctx context.Context, r *agentpb.AddARPNeighborsRequest) (*emptypb.Empty, error) {
	return g.c.AddARPNeighbors(ctx, r)
}

func (g grpcAgent) GetIPTables(ctx context.Context, r *agentpb.GetIPTablesRequest) (*agentpb.GetIPTablesResponse, error) {
	return g.c.GetIPTables(ctx, r)
}

func (g grpcAgent) SetIPTables(ctx context.Context, r *agentpb.SetIPTablesRequest) (*agentpb.SetIPTablesResponse, error) {
	return g.c.SetIPTables(ctx, r)
}

func (g grpcAgent) GetMetrics(ctx context.Context, r *agentpb.GetMetricsRequest) (*agentpb.Metrics, error) {
	return g.c.GetMetrics(ctx, r)
}

func (g grpcAgent) StartTracing(ctx context.Context, r *agentpb.StartTracingRequest) (*emptypb.Empty, error) {
	return g.c.StartTracing(ctx, r)
}

func (g grpcAgent) StopTracing(ctx context.Context, r *agentpb.StopTracingRequest) (*emptypb.Empty, error) {
	return g.c.StopTracing(ctx, r)
}

func (g grpcAgent) MemAgentMemcgSet(ctx context.Context, r *agentpb.MemAgentMemcgConfig) (*emptypb.Empty, error) {
	return g.c.MemAgentMemcgSet(ctx, r)
}

func (g grpcAgent) MemAgentCompactSet(ctx context.Context, r *agentpb.MemAgentCompactConfig) (*emptypb.Empty, error) {
	return g.c.MemAgentCompactSet(ctx, r)
}

func (g grpcAgent) CreateSandbox(ctx context.Context, r *agentpb.CreateSandboxRequest) (*emptypb.Empty, error) {
	return g.c.CreateSandbox(ctx, r)
}

func (g grpcAgent) DestroySandbox(ctx context.Context, r *agentpb.DestroySandboxRequest) (*emptypb.Empty, error) {
	return g.c.DestroySandbox(ctx, r)
}

func (g grpcAgent) OnlineCPUMem(ctx context.Context, r *agentpb.OnlineCPUMemRequest) (*emptypb.Empty, error) {
	return g.c.OnlineCPUMem(ctx, r)
}

func (g grpcAgent) ReseedRandomDev(ctx context.Context, r *agentpb.ReseedRandomDevRequest) (*emptypb.Empty, error) {
	return g.c.ReseedRandomDev(ctx, r)
}

func (g grpcAgent) GetGuestDetails(ctx context.Context, r *agentpb.GuestDetailsRequest) (*agentpb.GuestDetailsResponse, error) {
	return g.c.GetGuestDetails(ctx, r)
}

func (g grpcAgent) MemHotplugByProbe(ctx context.Context, r *agentpb.MemHotplugByProbeRequest) (*emptypb.Empty, error) {
	return g.c.MemHotplugByProbe(ctx, r)
}

func (g grpcAgent) SetGuestDateTime(ctx context.Context, r *agentpb.SetGuestDateTimeRequest) (*emptypb.Empty, error) {
	return g.c.SetGuestDateTime(ctx, r)
}

func (g grpcAgent) CopyFile(ctx context.Context, r *agentpb.CopyFileRequest) (*emptypb.Empty, error) {
	return g.c.CopyFile(ctx, r)
}

func (g grpcAgent) GetOOMEvent(ctx context.Context, r *agentpb.GetOOMEventRequest) (*agentpb.OOMEvent, error) {
	return g.c.GetOOMEvent(ctx, r)
}

func (g grpcAgent) AddSwap(ctx context.Context, r *agentpb.AddSwapRequest) (*emptypb.Empty, error) {
	return g.c.AddSwap(ctx, r)
}

func (g grpcAgent) GetVolumeStats(ctx context.Context, r *agentpb.VolumeStatsRequest) (*agentpb.VolumeStatsResponse, error) {
	return g.c.GetVolumeStats(ctx, r)
}

func (g grpcAgent) ResizeVolume(ctx context.Context, r *agentpb.ResizeVolumeRequest) (*emptypb.Empty, error) {
	return g.c.ResizeVolume(ctx, r)
}

func (g grpcAgent) SetPolicy(ctx context.Context, r *agentpb.SetPolicyRequest) (*emptypb.Empty, error) {
	return g.c.SetPolicy(ctx, r)
}

// grpcHealth does the same for the Health service.
type grpcHealth struct{ c agentpb.HealthClient }

var _ agentpb.TTRPCHealthService = grpcHealth{}

func (g grpcHealth) Check(ctx context.Context, r *agentpb.CheckRequest) (*agentpb.HealthCheckResponse, error) {
	return g.c.Check(ctx, r)
}

func (g grpcHealth) Version(ctx context.Context, r *agentpb.CheckRequest) (*agentpb.VersionCheckResponse, error) {
	return g.c.Version(ctx, r)
}
