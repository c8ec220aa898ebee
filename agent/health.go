package agent

import (
	"context"
	"strconv"
	"sync/atomic"

	"github.com/kguest/kguest/internal/version"
	"github.com/kguest/kguest/protocols/agentpb"
)

// Health implements the grpc.Health service: Check answers SERVING while
// the agent serves, Version the agent's build version and API version.
type Health struct {
	agentpb.UnimplementedHealthServer
	notServing atomic.Bool
}

// SetServing changes what Check answers, e.g. NOT_SERVING while shutting down.
func (h *Health) SetServing(serving bool) { h.notServing.Store(!serving) }

// Check reports the agent's serving status.
func (h *Health) Check(context.Context, *agentpb.CheckRequest) (*agentpb.HealthCheckResponse, error) {
	st := agentpb.HealthCheckResponse_SERVING
	if h.notServing.Load() {
		st = agentpb.HealthCheckResponse_NOT_SERVING
	}
	return &agentpb.HealthCheckResponse{Status: st}, nil
}

// Version reports the agent version stamped at build time and the version
// of the wire API.
func (h *Health) Version(context.Context, *agentpb.CheckRequest) (*agentpb.VersionCheckResponse, error) {
	return &agentpb.VersionCheckResponse{
		GrpcVersion:  strconv.FormatUint(uint64(version.APIVersion), 10),
		AgentVersion: version.Version + policySuffix(),
	}, nil
}

var (
	_ agentpb.HealthServer       = (*Health)(nil)
	_ agentpb.TTRPCHealthService = (*Health)(nil)
)
