package container

import (
	"encoding/json"
	"testing"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"
)

func TestSpecRoundTrip(t *testing.T) {
	s := specconv.Example()
	limit, shares, pids := int64(32<<20), uint64(512), int64(64)
	errno := uint(1)
	s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit}
	s.Linux.Resources.CPU = &specs.LinuxCPU{Shares: &shares, Cpus: "0-1"}
	s.Linux.Resources.Pids = &specs.LinuxPids{Limit: &pids}
	s.Linux.Seccomp = &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64},
		Syscalls: []specs.LinuxSyscall{{Names: []string{"mkdir"}, Action: specs.ActErrno, ErrnoRet: &errno,
			Args: []specs.LinuxSeccompArg{{Index: 1, Value: 2, Op: specs.OpEqualTo}}}},
	}
	s.Hooks = &specs.Hooks{Poststart: []specs.Hook{{Path: "/bin/true", Args: []string{"true"}}}}
	got, err := ToSpec(FromSpec(s))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(s)
	have, _ := json.Marshal(got)
	if string(want) != string(have) {
		t.Fatalf("round trip differs:\nwant %s\nhave %s", want, have)
	}
}

func TestToSpecRejectsNull(t *testing.T) {
	if _, err := ToSpec(nil); err == nil {
		t.Fatal("nil spec accepted")
	}
}

// A Kata 1.x host sends the score as uint32, a negative one wrapped.
func TestOOMScoreAdjFromKata1x(t *testing.T) {
	for _, tc := range []struct {
		wire int64
		want int
	}{
		{500, 500},
		{-997, -997},                 // Kata 2.x/3.x: int64
		{1<<32 - 997, -997},          // Kata 1.x: uint32(-997)
		{1<<32 - 1000, -1000},        // the lowest valid score, wrapped
		{1<<32 - 1001, 1<<32 - 1001}, // no score: left for runc to refuse
		{1 << 32, 1 << 32},
	} {
		p := ToProcess(&agentpb.Process{Args: []string{"true"}, OOMScoreAdj: tc.wire})
		if p.OOMScoreAdj == nil || *p.OOMScoreAdj != tc.want {
			t.Errorf("OOMScoreAdj %d on the wire: got %v, want %d", tc.wire, p.OOMScoreAdj, tc.want)
		}
	}
}
