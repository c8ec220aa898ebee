package agent

import (
	"context"
	"errors"

	"github.com/kguest/kguest/agent/network"
	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/typespb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func netStatus(op string, err error) error {
	switch {
	case errors.Is(err, network.ErrInvalid):
		return status.Errorf(codes.InvalidArgument, "%s: %v", op, err)
	case errors.Is(err, network.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: %v", op, err)
	case errors.Is(err, network.ErrNoTool):
		return status.Errorf(codes.FailedPrecondition, "%s: %v", op, err)
	}
	return status.Errorf(codes.Internal, "%s: %v", op, err)
}

// UpdateInterface configures the link with the request's MAC address.
func (a *Agent) UpdateInterface(_ context.Context, req *agentpb.UpdateInterfaceRequest) (*typespb.Interface, error) {
	if req.GetInterface() == nil {
		return nil, status.Error(codes.InvalidArgument, "UpdateInterface: no interface")
	}
	iface, err := a.guestServices().net.UpdateInterface(req.GetInterface())
	if err != nil {
		return nil, netStatus("UpdateInterface", err)
	}
	return iface, nil
}

// UpdateRoutes replaces the main routing table.
func (a *Agent) UpdateRoutes(_ context.Context, req *agentpb.UpdateRoutesRequest) (*agentpb.Routes, error) {
	rs, err := a.guestServices().net.UpdateRoutes(req.GetRoutes().GetRoutes())
	if err != nil {
		return nil, netStatus("UpdateRoutes", err)
	}
	return &agentpb.Routes{Routes: rs}, nil
}

// ListInterfaces describes the guest's links.
func (a *Agent) ListInterfaces(context.Context, *agentpb.ListInterfacesRequest) (*agentpb.Interfaces, error) {
	l, err := a.guestServices().net.ListInterfaces()
	if err != nil {
		return nil, netStatus("ListInterfaces", err)
	}
	return &agentpb.Interfaces{Interfaces: l}, nil
}

// ListRoutes describes the main routing table.
func (a *Agent) ListRoutes(context.Context, *agentpb.ListRoutesRequest) (*agentpb.Routes, error) {
	rs, err := a.guestServices().net.ListRoutes()
	if err != nil {
		return nil, netStatus("ListRoutes", err)
	}
	return &agentpb.Routes{Routes: rs}, nil
}

// AddARPNeighbors sets static neighbour entries.
func (a *Agent) AddARPNeighbors(_ context.Context, req *agentpb.AddARPNeighborsRequest) (*emptypb.Empty, error) {
	if err := a.guestServices().net.AddARPNeighbors(req.GetNeighbors().GetARPNeighbors()); err != nil {
		return nil, netStatus("AddARPNeighbors", err)
	}
	return &emptypb.Empty{}, nil
}

// GetIPTables returns iptables-save (ip6tables-save) output.
func (a *Agent) GetIPTables(ctx context.Context, req *agentpb.GetIPTablesRequest) (*agentpb.GetIPTablesResponse, error) {
	out, err := network.GetIPTables(ctx, req.GetIsIpv6())
	if err != nil {
		return nil, netStatus("GetIPTables", err)
	}
	return &agentpb.GetIPTablesResponse{Data: out}, nil
}

// SetIPTables loads rules with iptables-restore (ip6tables-restore).
func (a *Agent) SetIPTables(ctx context.Context, req *agentpb.SetIPTablesRequest) (*agentpb.SetIPTablesResponse, error) {
	out, err := network.SetIPTables(ctx, req.GetIsIpv6(), req.GetData())
	if err != nil {
		return nil, netStatus("SetIPTables", err)
	}
	return &agentpb.SetIPTablesResponse{Data: out}, nil
}
