package server

import (
	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/compat"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// grpcCodec is grpc-go's proto codec, except that a CreateContainerRequest
// has a Kata 1.x seccomp profile renumbered into the current layout before
// it is decoded. Only gRPC needs it: 1.x hosts never speak ttrpc.
type grpcCodec struct{ encoding.CodecV2 }

func newGRPCCodec() grpcCodec {
	return grpcCodec{encoding.GetCodecV2(grpcproto.Name)}
}

func (c grpcCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*agentpb.CreateContainerRequest)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	// proto.Unmarshal copies what it keeps, so buf can go back to the pool.
	return proto.Unmarshal(compat.UpgradeCreateContainer1x(buf.ReadOnlyData()), req)
}
