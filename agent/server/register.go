package server

import "github.com/kguest/kguest/protocols/agentpb"

// AgentService is an implementation of grpc.AgentService for both
// protocols; a type embedding agentpb.UnimplementedAgentServiceServer
// satisfies it with every RPC it does not define answering Unimplemented.
type AgentService interface {
	agentpb.AgentServiceServer
	agentpb.TTRPCAgentServiceService
}

// HealthService is an implementation of grpc.Health for both protocols.
type HealthService interface {
	agentpb.HealthServer
	agentpb.TTRPCHealthService
}

// Register serves agent and health on both gRPC and ttrpc. Call it before
// Serve.
func (s *Server) Register(agent AgentService, health HealthService) {
	agentpb.RegisterAgentServiceServer(s.grpc, agent)
	agentpb.RegisterTTRPCAgentServiceService(s.ttrpc, agent)
	agentpb.RegisterHealthServer(s.grpc, health)
	agentpb.RegisterTTRPCHealthService(s.ttrpc, health)
}
