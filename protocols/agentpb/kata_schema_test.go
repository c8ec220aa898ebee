package agentpb_test

import (
	"sort"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Registers package types.
	_ "github.com/kguest/kguest/protocols/typespb"
)

// kataMessages is the Kata Containers agent API as a host runtime sees it on
// the wire, derived from Kata's src/libs/protocols/protos/{agent,oci,types,
// csi,health}.proto (3.x): for every message, its fields as
// "name=number:type". Types are scalar kinds, full message or enum names,
// "[]T" for repeated, "map<K,V>", "?T" for proto3 optional, "Oneof|T" for a
// member of oneof Oneof. Newer Kata renamed types.Interface field 6 from
// pciPath to devicePath (same number and type) and added types.Route.flags.
var kataMessages = map[string]string{
	// agent.proto
	"grpc.CreateContainerRequest":                "container_id=1:string exec_id=2:string string_user=3:grpc.StringUser devices=4:[]grpc.Device storages=5:[]grpc.Storage OCI=6:grpc.Spec sandbox_pidns=7:bool shared_mounts=8:[]grpc.SharedMount stdin_port=9:uint32 stdout_port=10:uint32 stderr_port=11:uint32",
	"grpc.StartContainerRequest":                 "container_id=1:string",
	"grpc.RemoveContainerRequest":                "container_id=1:string timeout=2:uint32",
	"grpc.ExecProcessRequest":                    "container_id=1:string exec_id=2:string string_user=3:grpc.StringUser process=4:grpc.Process stdin_port=5:uint32 stdout_port=6:uint32 stderr_port=7:uint32",
	"grpc.SignalProcessRequest":                  "container_id=1:string exec_id=2:string signal=3:uint32",
	"grpc.WaitProcessRequest":                    "container_id=1:string exec_id=2:string",
	"grpc.WaitProcessResponse":                   "status=1:int32",
	"grpc.UpdateContainerRequest":                "container_id=1:string resources=2:grpc.LinuxResources",
	"grpc.StatsContainerRequest":                 "container_id=1:string",
	"grpc.PauseContainerRequest":                 "container_id=1:string",
	"grpc.ResumeContainerRequest":                "container_id=1:string",
	"grpc.CpuUsage":                              "total_usage=1:uint64 percpu_usage=2:[]uint64 usage_in_kernelmode=3:uint64 usage_in_usermode=4:uint64",
	"grpc.ThrottlingData":                        "periods=1:uint64 throttled_periods=2:uint64 throttled_time=3:uint64",
	"grpc.CpuStats":                              "cpu_usage=1:grpc.CpuUsage throttling_data=2:grpc.ThrottlingData",
	"grpc.PidsStats":                             "current=1:uint64 limit=2:uint64",
	"grpc.MemoryData":                            "usage=1:uint64 max_usage=2:uint64 failcnt=3:uint64 limit=4:uint64",
	"grpc.MemoryStats":                           "cache=1:uint64 usage=2:grpc.MemoryData swap_usage=3:grpc.MemoryData kernel_usage=4:grpc.MemoryData use_hierarchy=5:bool stats=6:map<string,uint64>",
	"grpc.BlkioStatsEntry":                       "major=1:uint64 minor=2:uint64 op=3:string value=4:uint64",
	"grpc.BlkioStats":                            "io_service_bytes_recursive=1:[]grpc.BlkioStatsEntry io_serviced_recursive=2:[]grpc.BlkioStatsEntry io_queued_recursive=3:[]grpc.BlkioStatsEntry io_service_time_recursive=4:[]grpc.BlkioStatsEntry io_wait_time_recursive=5:[]grpc.BlkioStatsEntry io_merged_recursive=6:[]grpc.BlkioStatsEntry io_time_recursive=7:[]grpc.BlkioStatsEntry sectors_recursive=8:[]grpc.BlkioStatsEntry",
	"grpc.HugetlbStats":                          "usage=1:uint64 max_usage=2:uint64 failcnt=3:uint64",
	"grpc.CgroupStats":                           "cpu_stats=1:grpc.CpuStats memory_stats=2:grpc.MemoryStats pids_stats=3:grpc.PidsStats blkio_stats=4:grpc.BlkioStats hugetlb_stats=5:map<string,grpc.HugetlbStats>",
	"grpc.NetworkStats":                          "name=1:string rx_bytes=2:uint64 rx_packets=3:uint64 rx_errors=4:uint64 rx_dropped=5:uint64 tx_bytes=6:uint64 tx_packets=7:uint64 tx_errors=8:uint64 tx_dropped=9:uint64",
	"grpc.StatsContainerResponse":                "cgroup_stats=1:grpc.CgroupStats network_stats=2:[]grpc.NetworkStats",
	"grpc.WriteStreamRequest":                    "container_id=1:string exec_id=2:string data=3:bytes",
	"grpc.WriteStreamResponse":                   "len=1:uint32",
	"grpc.ReadStreamRequest":                     "container_id=1:string exec_id=2:string len=3:uint32",
	"grpc.ReadStreamResponse":                    "data=1:bytes",
	"grpc.CloseStdinRequest":                     "container_id=1:string exec_id=2:string",
	"grpc.TtyWinResizeRequest":                   "container_id=1:string exec_id=2:string row=3:uint32 column=4:uint32",
	"grpc.KernelModule":                          "name=1:string parameters=2:[]string",
	"grpc.CreateSandboxRequest":                  "hostname=1:string dns=2:[]string storages=3:[]grpc.Storage sandbox_pidns=4:bool sandbox_id=5:string guest_hook_path=6:string kernel_modules=7:[]grpc.KernelModule",
	"grpc.DestroySandboxRequest":                 "",
	"grpc.RemoveStaleVirtiofsShareMountsRequest": "",
	"grpc.Interfaces":                            "Interfaces=1:[]types.Interface",
	"grpc.Routes":                                "Routes=1:[]types.Route",
	"grpc.UpdateInterfaceRequest":                "interface=1:types.Interface",
	"grpc.UpdateRoutesRequest":                   "routes=1:grpc.Routes",
	"grpc.UpdateEphemeralMountsRequest":          "storages=1:[]grpc.Storage",
	"grpc.ListInterfacesRequest":                 "",
	"grpc.ListRoutesRequest":                     "",
	"grpc.ARPNeighbors":                          "ARPNeighbors=1:[]types.ARPNeighbor",
	"grpc.AddARPNeighborsRequest":                "neighbors=1:grpc.ARPNeighbors",
	"grpc.GetIPTablesRequest":                    "is_ipv6=1:bool",
	"grpc.GetIPTablesResponse":                   "data=1:bytes",
	"grpc.SetIPTablesRequest":                    "is_ipv6=1:bool data=2:bytes",
	"grpc.SetIPTablesResponse":                   "data=1:bytes",
	"grpc.OnlineCPUMemRequest":                   "wait=1:bool nb_cpus=2:uint32 cpu_only=3:bool",
	"grpc.ReseedRandomDevRequest":                "data=2:bytes",
	"grpc.AgentDetails":                          "version=1:string init_daemon=2:bool device_handlers=3:[]string storage_handlers=4:[]string supports_seccomp=5:bool extra_features=6:[]string",
	"grpc.GuestDetailsRequest":                   "mem_block_size=1:bool mem_hotplug_probe=2:bool",
	"grpc.GuestDetailsResponse":                  "mem_block_size_bytes=1:uint64 agent_details=2:grpc.AgentDetails support_mem_hotplug_probe=3:bool",
	"grpc.MemHotplugByProbeRequest":              "memHotplugProbeAddr=1:[]uint64",
	"grpc.SetGuestDateTimeRequest":               "Sec=1:int64 Usec=2:int64",
	"grpc.FSGroup":                               "group_id=2:uint32 group_change_policy=3:types.FSGroupChangePolicy",
	"grpc.SharedMount":                           "name=1:string src_ctr=2:string src_path=3:string dst_ctr=4:string dst_path=5:string",
	"grpc.Storage":                               "driver=1:string driver_options=2:[]string source=3:string fstype=4:string options=5:[]string mount_point=6:string fs_group=7:grpc.FSGroup",
	"grpc.Device":                                "id=1:string type=2:string vm_path=3:string container_path=4:string options=5:[]string",
	"grpc.StringUser":                            "uid=1:string gid=2:string additionalGids=3:[]string",
	"grpc.CopyFileRequest":                       "path=1:string file_size=2:int64 file_mode=3:uint32 dir_mode=4:uint32 uid=5:int32 gid=6:int32 offset=7:int64 data=8:bytes",
	"grpc.GetOOMEventRequest":                    "",
	"grpc.OOMEvent":                              "container_id=1:string",
	"grpc.AddSwapRequest":                        "PCIPath=1:[]uint32",
	"grpc.GetMetricsRequest":                     "",
	"grpc.Metrics":                               "metrics=1:string",
	"grpc.VolumeStatsRequest":                    "volume_guest_path=1:string",
	"grpc.ResizeVolumeRequest":                   "volume_guest_path=1:string size=2:uint64",
	"grpc.SetPolicyRequest":                      "policy=1:string",
	"grpc.MemAgentMemcgConfig":                   "disabled=1:?bool swap=2:?bool swappiness_max=3:?uint32 period_secs=4:?uint64 period_psi_percent_limit=5:?uint32 eviction_psi_percent_limit=6:?uint32 eviction_run_aging_count_min=7:?uint64",
	"grpc.MemAgentCompactConfig":                 "disabled=1:?bool period_secs=2:?uint64 period_psi_percent_limit=3:?uint32 compact_psi_percent_limit=4:?uint32 compact_sec_max=5:?int64 compact_order=6:?uint32 compact_threshold=7:?uint64 compact_force_times=8:?uint64",

	// Kata 1.x (kata-containers/agent protocols/grpc/agent.proto) only.
	"grpc.ListProcessesRequest":  "container_id=1:string format=2:string args=3:[]string",
	"grpc.ListProcessesResponse": "process_list=1:bytes",
	"grpc.StartTracingRequest":   "",
	"grpc.StopTracingRequest":    "",

	// oci.proto
	"grpc.Spec":                   "Version=1:string Process=2:grpc.Process Root=3:grpc.Root Hostname=4:string Mounts=5:[]grpc.Mount Hooks=6:grpc.Hooks Annotations=7:map<string,string> Linux=8:grpc.Linux Solaris=9:grpc.Solaris Windows=10:grpc.Windows",
	"grpc.Process":                "Terminal=1:bool ConsoleSize=2:grpc.Box User=3:grpc.User Args=4:[]string Env=5:[]string Cwd=6:string Capabilities=7:grpc.LinuxCapabilities Rlimits=8:[]grpc.POSIXRlimit NoNewPrivileges=9:bool ApparmorProfile=10:string OOMScoreAdj=11:int64 SelinuxLabel=12:string",
	"grpc.Box":                    "Height=1:uint32 Width=2:uint32",
	"grpc.User":                   "UID=1:uint32 GID=2:uint32 AdditionalGids=3:[]uint32 Username=4:string",
	"grpc.LinuxCapabilities":      "Bounding=1:[]string Effective=2:[]string Inheritable=3:[]string Permitted=4:[]string Ambient=5:[]string",
	"grpc.POSIXRlimit":            "Type=1:string Hard=2:uint64 Soft=3:uint64",
	"grpc.Mount":                  "destination=1:string source=2:string type=3:string options=4:[]string",
	"grpc.Root":                   "Path=1:string Readonly=2:bool",
	"grpc.Hooks":                  "Prestart=1:[]grpc.Hook Poststart=2:[]grpc.Hook Poststop=3:[]grpc.Hook CreateRuntime=4:[]grpc.Hook CreateContainer=5:[]grpc.Hook StartContainer=6:[]grpc.Hook",
	"grpc.Hook":                   "Path=1:string Args=2:[]string Env=3:[]string Timeout=4:int64",
	"grpc.Linux":                  "UIDMappings=1:[]grpc.LinuxIDMapping GIDMappings=2:[]grpc.LinuxIDMapping Sysctl=3:map<string,string> Resources=4:grpc.LinuxResources CgroupsPath=5:string Namespaces=6:[]grpc.LinuxNamespace Devices=7:[]grpc.LinuxDevice Seccomp=8:grpc.LinuxSeccomp RootfsPropagation=9:string MaskedPaths=10:[]string ReadonlyPaths=11:[]string MountLabel=12:string IntelRdt=13:grpc.LinuxIntelRdt",
	"grpc.Windows":                "dummy=1:string",
	"grpc.Solaris":                "dummy=1:string",
	"grpc.LinuxIDMapping":         "HostID=1:uint32 ContainerID=2:uint32 Size=3:uint32",
	"grpc.LinuxNamespace":         "Type=1:string Path=2:string",
	"grpc.LinuxDevice":            "Path=1:string Type=2:string Major=3:int64 Minor=4:int64 FileMode=5:uint32 UID=6:uint32 GID=7:uint32",
	"grpc.LinuxResources":         "Devices=1:[]grpc.LinuxDeviceCgroup Memory=2:grpc.LinuxMemory CPU=3:grpc.LinuxCPU Pids=4:grpc.LinuxPids BlockIO=5:grpc.LinuxBlockIO HugepageLimits=6:[]grpc.LinuxHugepageLimit Network=7:grpc.LinuxNetwork",
	"grpc.LinuxMemory":            "Limit=1:int64 Reservation=2:int64 Swap=3:int64 Kernel=4:int64 KernelTCP=5:int64 Swappiness=6:uint64 DisableOOMKiller=7:bool",
	"grpc.LinuxCPU":               "Shares=1:uint64 Quota=2:int64 Period=3:uint64 RealtimeRuntime=4:int64 RealtimePeriod=5:uint64 Cpus=6:string Mems=7:string",
	"grpc.LinuxWeightDevice":      "Major=1:int64 Minor=2:int64 Weight=3:uint32 LeafWeight=4:uint32",
	"grpc.LinuxThrottleDevice":    "Major=1:int64 Minor=2:int64 Rate=3:uint64",
	"grpc.LinuxBlockIO":           "Weight=1:uint32 LeafWeight=2:uint32 WeightDevice=3:[]grpc.LinuxWeightDevice ThrottleReadBpsDevice=4:[]grpc.LinuxThrottleDevice ThrottleWriteBpsDevice=5:[]grpc.LinuxThrottleDevice ThrottleReadIOPSDevice=6:[]grpc.LinuxThrottleDevice ThrottleWriteIOPSDevice=7:[]grpc.LinuxThrottleDevice",
	"grpc.LinuxPids":              "Limit=1:int64",
	"grpc.LinuxDeviceCgroup":      "Allow=1:bool Type=2:string Major=3:int64 Minor=4:int64 Access=5:string",
	"grpc.LinuxNetwork":           "ClassID=1:uint32 Priorities=2:[]grpc.LinuxInterfacePriority",
	"grpc.LinuxHugepageLimit":     "Pagesize=1:string Limit=2:uint64",
	"grpc.LinuxInterfacePriority": "Name=1:string Priority=2:uint32",
	"grpc.LinuxSeccomp":           "DefaultAction=1:string Architectures=2:[]string Flags=3:[]string Syscalls=4:[]grpc.LinuxSyscall",
	"grpc.LinuxSeccompArg":        "Index=1:uint64 Value=2:uint64 ValueTwo=3:uint64 Op=4:string",
	"grpc.LinuxSyscall":           "Names=1:[]string Action=2:string errnoret=3:ErrnoRet|uint32 Args=4:[]grpc.LinuxSeccompArg",
	"grpc.LinuxIntelRdt":          "L3CacheSchema=1:string",

	// health.proto
	"grpc.CheckRequest":         "service=1:string",
	"grpc.HealthCheckResponse":  "status=1:grpc.HealthCheckResponse.ServingStatus",
	"grpc.VersionCheckResponse": "grpc_version=1:string agent_version=2:string",

	// csi.proto
	"grpc.VolumeStatsResponse": "usage=1:[]grpc.VolumeUsage volume_condition=2:grpc.VolumeCondition",
	"grpc.VolumeUsage":         "available=1:uint64 total=2:uint64 used=3:uint64 unit=4:grpc.VolumeUsage.Unit",
	"grpc.VolumeCondition":     "abnormal=1:bool message=2:string",

	// types.proto
	"types.IPAddress":   "family=1:types.IPFamily address=2:string mask=3:string",
	"types.Interface":   "device=1:string name=2:string IPAddresses=3:[]types.IPAddress mtu=4:uint64 hwAddr=5:string devicePath=6:string type=7:string raw_flags=8:uint32",
	"types.Route":       "dest=1:string gateway=2:string device=3:string source=4:string scope=5:uint32 family=6:types.IPFamily flags=7:uint32",
	"types.ARPNeighbor": "toIPAddress=1:types.IPAddress device=2:string lladdr=3:string state=4:int32 flags=5:int32",
}

// kataEnums lists every enum value as "NAME=number".
var kataEnums = map[string]string{
	"types.IPFamily":                         "v4=0 v6=1",
	"types.FSGroupChangePolicy":              "Always=0 OnRootMismatch=1",
	"grpc.HealthCheckResponse.ServingStatus": "UNKNOWN=0 SERVING=1 NOT_SERVING=2",
	"grpc.VolumeUsage.Unit":                  "UNKNOWN=0 BYTES=1 INODES=2",
}

// kataServices lists every method as "Name(Input)Output"; the 1.x-only
// ListProcesses, StartTracing and StopTracing are kept for 1.x hosts.
var kataServices = map[string]string{
	"grpc.Health": "Check(grpc.CheckRequest)grpc.HealthCheckResponse Version(grpc.CheckRequest)grpc.VersionCheckResponse",
	"grpc.AgentService": "" +
		"CreateContainer(grpc.CreateContainerRequest)google.protobuf.Empty " +
		"StartContainer(grpc.StartContainerRequest)google.protobuf.Empty " +
		"RemoveContainer(grpc.RemoveContainerRequest)google.protobuf.Empty " +
		"ExecProcess(grpc.ExecProcessRequest)google.protobuf.Empty " +
		"SignalProcess(grpc.SignalProcessRequest)google.protobuf.Empty " +
		"WaitProcess(grpc.WaitProcessRequest)grpc.WaitProcessResponse " +
		"UpdateContainer(grpc.UpdateContainerRequest)google.protobuf.Empty " +
		"UpdateEphemeralMounts(grpc.UpdateEphemeralMountsRequest)google.protobuf.Empty " +
		"StatsContainer(grpc.StatsContainerRequest)grpc.StatsContainerResponse " +
		"PauseContainer(grpc.PauseContainerRequest)google.protobuf.Empty " +
		"ResumeContainer(grpc.ResumeContainerRequest)google.protobuf.Empty " +
		"RemoveStaleVirtiofsShareMounts(grpc.RemoveStaleVirtiofsShareMountsRequest)google.protobuf.Empty " +
		"WriteStdin(grpc.WriteStreamRequest)grpc.WriteStreamResponse " +
		"ReadStdout(grpc.ReadStreamRequest)grpc.ReadStreamResponse " +
		"ReadStderr(grpc.ReadStreamRequest)grpc.ReadStreamResponse " +
		"CloseStdin(grpc.CloseStdinRequest)google.protobuf.Empty " +
		"TtyWinResize(grpc.TtyWinResizeRequest)google.protobuf.Empty " +
		"UpdateInterface(grpc.UpdateInterfaceRequest)types.Interface " +
		"UpdateRoutes(grpc.UpdateRoutesRequest)grpc.Routes " +
		"ListInterfaces(grpc.ListInterfacesRequest)grpc.Interfaces " +
		"ListRoutes(grpc.ListRoutesRequest)grpc.Routes " +
		"AddARPNeighbors(grpc.AddARPNeighborsRequest)google.protobuf.Empty " +
		"GetIPTables(grpc.GetIPTablesRequest)grpc.GetIPTablesResponse " +
		"SetIPTables(grpc.SetIPTablesRequest)grpc.SetIPTablesResponse " +
		"GetMetrics(grpc.GetMetricsRequest)grpc.Metrics " +
		"MemAgentMemcgSet(grpc.MemAgentMemcgConfig)google.protobuf.Empty " +
		"MemAgentCompactSet(grpc.MemAgentCompactConfig)google.protobuf.Empty " +
		"CreateSandbox(grpc.CreateSandboxRequest)google.protobuf.Empty " +
		"DestroySandbox(grpc.DestroySandboxRequest)google.protobuf.Empty " +
		"OnlineCPUMem(grpc.OnlineCPUMemRequest)google.protobuf.Empty " +
		"ReseedRandomDev(grpc.ReseedRandomDevRequest)google.protobuf.Empty " +
		"GetGuestDetails(grpc.GuestDetailsRequest)grpc.GuestDetailsResponse " +
		"MemHotplugByProbe(grpc.MemHotplugByProbeRequest)google.protobuf.Empty " +
		"SetGuestDateTime(grpc.SetGuestDateTimeRequest)google.protobuf.Empty " +
		"CopyFile(grpc.CopyFileRequest)google.protobuf.Empty " +
		"GetOOMEvent(grpc.GetOOMEventRequest)grpc.OOMEvent " +
		"AddSwap(grpc.AddSwapRequest)google.protobuf.Empty " +
		"GetVolumeStats(grpc.VolumeStatsRequest)grpc.VolumeStatsResponse " +
		"ResizeVolume(grpc.ResizeVolumeRequest)google.protobuf.Empty " +
		"SetPolicy(grpc.SetPolicyRequest)google.protobuf.Empty " +
		"ListProcesses(grpc.ListProcessesRequest)grpc.ListProcessesResponse " +
		"StartTracing(grpc.StartTracingRequest)google.protobuf.Empty " +
		"StopTracing(grpc.StopTracingRequest)google.protobuf.Empty",
}

// fieldType renders a field in the notation of kataMessages.
func fieldType(fd protoreflect.FieldDescriptor) string {
	base := func(fd protoreflect.FieldDescriptor) string {
		switch fd.Kind() {
		case protoreflect.MessageKind, protoreflect.GroupKind:
			return string(fd.Message().FullName())
		case protoreflect.EnumKind:
			return string(fd.Enum().FullName())
		}
		return fd.Kind().String()
	}
	switch {
	case fd.IsMap():
		return "map<" + base(fd.MapKey()) + "," + base(fd.MapValue()) + ">"
	case fd.IsList():
		return "[]" + base(fd)
	case fd.HasOptionalKeyword():
		return "?" + base(fd)
	case fd.ContainingOneof() != nil:
		return string(fd.ContainingOneof().Name()) + "|" + base(fd)
	}
	return base(fd)
}

func describeFields(md protoreflect.MessageDescriptor) map[string]string {
	out := map[string]string{}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		out[string(fd.Name())] = strconv.Itoa(int(fd.Number())) + ":" + fieldType(fd)
	}
	return out
}

func parseFields(spec string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(spec) {
		name, rest, _ := strings.Cut(f, "=")
		out[name] = rest
	}
	return out
}

// ourSchema walks every message, enum and service our generated code
// registers in the Kata packages grpc and types.
func ourSchema(t *testing.T) (msgs map[string]protoreflect.MessageDescriptor, enums map[string]protoreflect.EnumDescriptor, svcs map[string]protoreflect.ServiceDescriptor) {
	t.Helper()
	msgs = map[string]protoreflect.MessageDescriptor{}
	enums = map[string]protoreflect.EnumDescriptor{}
	svcs = map[string]protoreflect.ServiceDescriptor{}
	var walk func(ms protoreflect.MessageDescriptors, es protoreflect.EnumDescriptors)
	walk = func(ms protoreflect.MessageDescriptors, es protoreflect.EnumDescriptors) {
		for i := 0; i < es.Len(); i++ {
			enums[string(es.Get(i).FullName())] = es.Get(i)
		}
		for i := 0; i < ms.Len(); i++ {
			md := ms.Get(i)
			if md.IsMapEntry() {
				continue
			}
			msgs[string(md.FullName())] = md
			walk(md.Messages(), md.Enums())
		}
	}
	for _, pkg := range []protoreflect.FullName{"grpc", "types"} {
		n := 0
		protoregistry.GlobalFiles.RangeFilesByPackage(pkg, func(fd protoreflect.FileDescriptor) bool {
			n++
			if fd.Syntax() != protoreflect.Proto3 {
				t.Errorf("%s is %v, Kata's files are proto3", fd.Path(), fd.Syntax())
			}
			walk(fd.Messages(), fd.Enums())
			for i := 0; i < fd.Services().Len(); i++ {
				sd := fd.Services().Get(i)
				svcs[string(sd.FullName())] = sd
			}
			return true
		})
		if n == 0 {
			t.Fatalf("no file registered for package %s", pkg)
		}
	}
	return msgs, enums, svcs
}

// TestSchemaMatchesKata compares, both ways, every message, field, enum and
// method we register with the Kata agent API: a field Kata lacks is as much
// a difference as one we lack, since a later Kata may give its number
// another meaning.
func TestSchemaMatchesKata(t *testing.T) {
	msgs, enums, svcs := ourSchema(t)

	for _, name := range sortedKeys(msgs) {
		want, ok := kataMessages[name]
		if !ok {
			t.Errorf("message %s is not in Kata's API", name)
			continue
		}
		got, wantF := describeFields(msgs[name]), parseFields(want)
		for _, f := range sortedKeys(wantF) {
			switch g, ok := got[f]; {
			case !ok:
				t.Errorf("%s lacks field %s=%s", name, f, wantF[f])
			case g != wantF[f]:
				t.Errorf("%s.%s = %s, Kata has %s", name, f, g, wantF[f])
			}
		}
		for _, f := range sortedKeys(got) {
			if _, ok := wantF[f]; !ok {
				t.Errorf("%s has field %s=%s that Kata does not", name, f, got[f])
			}
		}
	}
	for _, name := range sortedKeys(kataMessages) {
		if _, ok := msgs[name]; !ok {
			t.Errorf("Kata message %s is missing", name)
		}
	}

	for _, name := range sortedKeys(kataEnums) {
		ed, ok := enums[name]
		if !ok {
			t.Errorf("Kata enum %s is missing", name)
			continue
		}
		var got []string
		for i := 0; i < ed.Values().Len(); i++ {
			v := ed.Values().Get(i)
			got = append(got, string(v.Name())+"="+strconv.Itoa(int(v.Number())))
		}
		if g := strings.Join(got, " "); g != kataEnums[name] {
			t.Errorf("enum %s = %q, Kata has %q", name, g, kataEnums[name])
		}
	}
	for _, name := range sortedKeys(enums) {
		if _, ok := kataEnums[name]; !ok {
			t.Errorf("enum %s is not in Kata's API", name)
		}
	}

	for _, name := range sortedKeys(kataServices) {
		sd, ok := svcs[name]
		if !ok {
			t.Errorf("Kata service %s is missing", name)
			continue
		}
		want := map[string]bool{}
		for _, m := range strings.Fields(kataServices[name]) {
			want[m] = true
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			m := sd.Methods().Get(i)
			sig := string(m.Name()) + "(" + string(m.Input().FullName()) + ")" + string(m.Output().FullName())
			if m.IsStreamingClient() || m.IsStreamingServer() {
				t.Errorf("%s.%s streams; Kata's methods are unary", name, m.Name())
			}
			if !want[sig] {
				t.Errorf("%s.%s is not in Kata's API as declared", name, sig)
			}
			delete(want, sig)
		}
		for _, sig := range sortedKeys(want) {
			t.Errorf("%s lacks Kata's %s", name, sig)
		}
	}
	for _, name := range sortedKeys(svcs) {
		if _, ok := kataServices[name]; !ok {
			t.Errorf("service %s is not in Kata's API", name)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
