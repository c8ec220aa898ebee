package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// recovered turns a panic value from the handler of method into an Internal
// error and logs it with the stack: the agent is PID 1 and must not die.
func (s *Server) recovered(method string, r any) error {
	s.log.Error("panic in RPC handler", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "%s: internal error: panic: %v", method, r)
}

// logCall logs a finished call at debug level.
func (s *Server) logCall(ctx context.Context, proto, method string, start time.Time, err error) {
	if !s.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	attrs := []any{"proto", proto, "method", method, "duration", time.Since(start)}
	if err != nil {
		st, _ := status.FromError(err)
		attrs = append(attrs, "code", st.Code().String(), "error", st.Message())
	}
	s.log.DebugContext(ctx, "rpc", attrs...)
}

// authorize runs the authorizer, if any, and turns its refusal into a status
// error (PermissionDenied unless it already carries a code).
func (s *Server) authorize(ctx context.Context, method string, req any) error {
	az := s.authorizer.Load()
	if az == nil || *az == nil {
		return nil
	}
	err := (*az)(ctx, method, req)
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.PermissionDenied, "%s: %v", method, err)
}

// grpcUnary is the gRPC unary interceptor: logging, panic recovery and
// authorization. The request size is enforced by grpc.MaxRecvMsgSize.
func (s *Server) grpcUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, s.recovered(info.FullMethod, r)
		}
		s.logCall(ctx, "grpc", info.FullMethod, start, err)
	}()
	if err := s.authorize(ctx, info.FullMethod, req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// grpcStream gives streaming RPCs the same logging and panic recovery.
func (s *Server) grpcStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			err = s.recovered(info.FullMethod, r)
		}
		s.logCall(ss.Context(), "grpc", info.FullMethod, start, err)
	}()
	return handler(srv, ss)
}

// ttrpcUnary is the ttrpc unary interceptor: logging, panic recovery, the
// request size limit and authorization. ttrpc hands the handler a decode
// function rather than the request, so size and authorization are checked
// right after the request is decoded, before the handler sees it.
func (s *Server) ttrpcUnary(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (resp any, err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, s.recovered(info.FullMethod, r)
		}
		s.logCall(ctx, "ttrpc", info.FullMethod, start, err)
	}()
	checked := func(req any) error {
		if err := unmarshal(req); err != nil {
			return err
		}
		if m, ok := req.(proto.Message); ok {
			if n := proto.Size(m); n > s.maxRequestSize {
				return status.Errorf(codes.ResourceExhausted, "%s: request of %d bytes exceeds the maximum request size of %d bytes", info.FullMethod, n, s.maxRequestSize)
			}
		}
		return s.authorize(ctx, info.FullMethod, req)
	}
	return method(ctx, checked)
}
