package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/runc/libcontainer/seccomp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kguest/kguest/internal/version"
	"github.com/kguest/kguest/protocols/agentpb"
)

func TestGetGuestDetails(t *testing.T) {
	tests := []struct {
		name      string
		blockSize string // contents of block_size_bytes; "" for no file
		probe     bool
		req       *agentpb.GuestDetailsRequest
		wantSize  uint64
		wantProbe bool
		wantCode  codes.Code
	}{
		{"128 MiB blocks", "8000000\n", true, &agentpb.GuestDetailsRequest{MemBlockSize: true, MemHotplugProbe: true}, 128 << 20, true, codes.OK},
		{"not asked", "8000000\n", true, &agentpb.GuestDetailsRequest{}, 0, false, codes.OK},
		{"no hotplug in kernel", "", false, &agentpb.GuestDetailsRequest{MemBlockSize: true, MemHotplugProbe: true}, 0, false, codes.OK},
		{"2 GiB blocks, no probe", "80000000", false, &agentpb.GuestDetailsRequest{MemBlockSize: true, MemHotplugProbe: true}, 2 << 30, false, codes.OK},
		{"garbage", "zz\n", false, &agentpb.GuestDetailsRequest{MemBlockSize: true}, 0, false, codes.Internal},
		{"empty", "\n", false, &agentpb.GuestDetailsRequest{MemBlockSize: true}, 0, false, codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := t.TempDir()
			mem := filepath.Join(sys, "devices/system/memory")
			if err := os.MkdirAll(mem, 0o755); err != nil {
				t.Fatal(err)
			}
			if tt.blockSize != "" {
				if err := os.WriteFile(filepath.Join(mem, "block_size_bytes"), []byte(tt.blockSize), 0o444); err != nil {
					t.Fatal(err)
				}
			}
			if tt.probe {
				if err := os.WriteFile(filepath.Join(mem, "probe"), nil, 0o200); err != nil {
					t.Fatal(err)
				}
			}
			a, err := New(Config{SysfsRoot: sys, InitDaemon: true})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := a.GetGuestDetails(context.Background(), tt.req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("GetGuestDetails: %v, want code %v", err, tt.wantCode)
			}
			if err != nil {
				return
			}
			if resp.GetMemBlockSizeBytes() != tt.wantSize {
				t.Errorf("mem_block_size_bytes = %d, want %d", resp.GetMemBlockSizeBytes(), tt.wantSize)
			}
			if resp.GetSupportMemHotplugProbe() != tt.wantProbe {
				t.Errorf("support_mem_hotplug_probe = %v, want %v", resp.GetSupportMemHotplugProbe(), tt.wantProbe)
			}
			d := resp.GetAgentDetails()
			if d.GetVersion() != version.Version || !d.GetInitDaemon() {
				t.Errorf("agent details = %v", d)
			}
		})
	}
}

func TestAgentDetailsFromState(t *testing.T) {
	var a Agent // the zero Agent works
	d := a.details()
	if d.GetInitDaemon() {
		t.Error("zero Agent claims to be init")
	}
	if got, want := d.GetStorageHandlers(), StorageHandlers(); !equalStrings(got, want) {
		t.Errorf("storage handlers = %v, want %v", got, want)
	}
	if got, want := d.GetDeviceHandlers(), DeviceHandlers(); !equalStrings(got, want) {
		t.Errorf("device handlers = %v, want %v", got, want)
	}
	major, _, _ := seccomp.Version()
	want := seccomp.Enabled && major > 0 && kernelSeccomp("/proc/self/status")
	if d.GetSupportsSeccomp() != want {
		t.Errorf("supports_seccomp = %v, want %v (built with seccomp: %v, libseccomp %d)", d.GetSupportsSeccomp(), want, seccomp.Enabled, major)
	}
	hasPolicy := false
	for _, f := range d.GetExtraFeatures() {
		hasPolicy = hasPolicy || f == "policy"
	}
	if hasPolicy != PolicyEnabled() {
		t.Errorf("extra features %v, policy built in: %v", d.GetExtraFeatures(), PolicyEnabled())
	}
}

func TestKernelSeccomp(t *testing.T) {
	dir := t.TempDir()
	with := filepath.Join(dir, "with")
	without := filepath.Join(dir, "without")
	os.WriteFile(with, []byte("Name:\tx\nSeccomp:\t0\nSeccomp_filters:\t0\n"), 0o644)
	os.WriteFile(without, []byte("Name:\tx\nNoNewPrivs:\t0\n"), 0o644)
	if !kernelSeccomp(with) {
		t.Error("Seccomp field not found")
	}
	if kernelSeccomp(without) || kernelSeccomp(filepath.Join(dir, "missing")) {
		t.Error("seccomp reported without a Seccomp field")
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHealth(t *testing.T) {
	var h Health
	ctx := context.Background()
	r, err := h.Check(ctx, &agentpb.CheckRequest{})
	if err != nil || r.GetStatus() != agentpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check = %v, %v", r, err)
	}
	h.SetServing(false)
	if r, _ := h.Check(ctx, &agentpb.CheckRequest{}); r.GetStatus() != agentpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Check while not serving = %v", r.GetStatus())
	}
	v, err := h.Version(ctx, &agentpb.CheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if v.GetAgentVersion() != version.Version+policySuffix() || v.GetGrpcVersion() != fmt.Sprint(version.APIVersion) {
		t.Errorf("Version = %v", v)
	}
}
