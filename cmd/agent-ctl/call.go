package main

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/kguest/kguest/protocols/client"

	// Registers the agent API descriptors looked up by name.
	_ "github.com/kguest/kguest/protocols/agentpb"
)

func init() {
	register(&verb{
		name:    "call",
		args:    "RPC [JSON]",
		summary: "call any AgentService or Health RPC with a protojson request (default {})",
		run:     runCall,
	})
}

// callServices are searched in order for an RPC given by bare name.
var callServices = []protoreflect.FullName{client.AgentServiceName, client.HealthServiceName}

// lookupRPC finds a method by "Name", "Service.Name" or "grpc.Service/Name".
func lookupRPC(name string) (protoreflect.MethodDescriptor, error) {
	svcName, method := "", name
	if i := strings.LastIndexAny(name, "./"); i >= 0 {
		svcName, method = name[:i], name[i+1:]
		if !strings.HasPrefix(svcName, "grpc.") {
			svcName = "grpc." + svcName
		}
	}
	services := callServices
	if svcName != "" {
		services = []protoreflect.FullName{protoreflect.FullName(svcName)}
	}
	for _, s := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(s)
		if err != nil {
			continue
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			continue
		}
		if m := sd.Methods().ByName(protoreflect.Name(method)); m != nil {
			return m, nil
		}
	}
	return nil, usageErr("unknown RPC %q (known: %s)", name, strings.Join(knownRPCs(), ", "))
}

func knownRPCs() []string {
	var names []string
	for _, s := range callServices {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(s)
		if err != nil {
			continue
		}
		ms := d.(protoreflect.ServiceDescriptor).Methods()
		for i := 0; i < ms.Len(); i++ {
			names = append(names, string(ms.Get(i).Name()))
		}
	}
	sort.Strings(names)
	return names
}

func runCall(e *env, args []string) error {
	fs := e.newFlags("call")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usageErr("call needs an RPC name and at most one JSON request")
	}
	m, err := lookupRPC(fs.Arg(0))
	if err != nil {
		return err
	}
	body := "{}"
	if fs.NArg() == 2 {
		body = fs.Arg(1)
	}
	reqType, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
	if err != nil {
		return fmt.Errorf("request type %s: %w", m.Input().FullName(), err)
	}
	respType, err := protoregistry.GlobalTypes.FindMessageByName(m.Output().FullName())
	if err != nil {
		return fmt.Errorf("response type %s: %w", m.Output().FullName(), err)
	}
	req, resp := reqType.New().Interface(), respType.New().Interface()
	if err := protojson.Unmarshal([]byte(body), req); err != nil {
		return usageErr("request for %s: %v", m.Name(), err)
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	ctx, cancel := e.rpcContext()
	defer cancel()
	if err := c.Invoke(ctx, string(m.Parent().FullName()), string(m.Name()), req, resp); err != nil {
		return err
	}
	return printJSON(e, resp)
}
