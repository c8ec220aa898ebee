package compat_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/compat"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// enc builds encoded messages field by field, as a Kata 1.x host would
// send them.
type enc []byte

func (e enc) str(num protowire.Number, s string) enc {
	e = protowire.AppendTag(e, num, protowire.BytesType)
	return protowire.AppendString(e, s)
}

func (e enc) msg(num protowire.Number, m enc) enc {
	e = protowire.AppendTag(e, num, protowire.BytesType)
	return protowire.AppendBytes(e, m)
}

func (e enc) varint(num protowire.Number, v uint64) enc {
	e = protowire.AppendTag(e, num, protowire.VarintType)
	return protowire.AppendVarint(e, v)
}

// request1x is a 1.x CreateContainerRequest carrying seccomp.
func request1x(syscalls ...enc) []byte {
	sec := enc{}.str(1, "SCMP_ACT_ERRNO").str(2, "SCMP_ARCH_X86_64")
	for _, s := range syscalls {
		sec = sec.msg(3, s) // 1.x LinuxSeccomp.Syscalls
	}
	linux := enc{}.str(5, "/kata/c1").msg(8, sec).str(10, "/proc/kcore")
	spec := enc{}.str(1, "1.0.2").str(4, "c1-host").msg(8, linux)
	return enc{}.str(1, "c1").str(2, "c1").msg(6, spec)
}

func syscall1x(action string, names ...string) enc {
	var e enc
	for _, n := range names {
		e = e.str(1, n)
	}
	return e.str(2, action)
}

func TestUpgradeCreateContainer1x(t *testing.T) {
	// Docker's default profile: clone allowed unless it makes namespaces.
	// The large value encodes bytes >= 0x80, invalid UTF-8 in a string.
	arg := enc{}.varint(1, 0).varint(2, 2114060288).varint(3, 0).str(4, "SCMP_CMP_MASKED_EQ")
	clone := syscall1x("SCMP_ACT_ALLOW", "clone").msg(3, arg) // 1.x LinuxSyscall.Args
	var many []string
	for i := 0; i < 40; i++ {
		many = append(many, "syscall_"+strings.Repeat("x", i%7))
	}
	in := request1x(syscall1x("SCMP_ACT_ALLOW", "read", "write"), clone, syscall1x("SCMP_ACT_ALLOW", many...))

	var plain agentpb.CreateContainerRequest
	if err := proto.Unmarshal(in, &plain); err == nil {
		t.Fatalf("the 1.x request decodes without the upgrade (flags %q): the test no longer shows the problem",
			plain.GetOCI().GetLinux().GetSeccomp().GetFlags())
	}
	// Without args it decodes, but as bogus flags.
	if err := proto.Unmarshal(request1x(syscall1x("SCMP_ACT_ALLOW", "read")), &plain); err != nil ||
		len(plain.GetOCI().GetLinux().GetSeccomp().GetFlags()) != 1 {
		t.Fatalf("1.x request without args: %v, flags %q", err, plain.GetOCI().GetLinux().GetSeccomp().GetFlags())
	}

	var req agentpb.CreateContainerRequest
	if err := proto.Unmarshal(compat.UpgradeCreateContainer1x(in), &req); err != nil {
		t.Fatalf("upgraded request: %v", err)
	}
	s := req.GetOCI()
	sec := s.GetLinux().GetSeccomp()
	if req.GetContainerId() != "c1" || s.GetHostname() != "c1-host" || s.GetLinux().GetCgroupsPath() != "/kata/c1" ||
		len(s.GetLinux().GetMaskedPaths()) != 1 || sec.GetDefaultAction() != "SCMP_ACT_ERRNO" || len(sec.GetArchitectures()) != 1 {
		t.Errorf("fields around the profile changed: %v", &req)
	}
	if len(sec.GetFlags()) != 0 || len(sec.GetSyscalls()) != 3 {
		t.Fatalf("flags %q, %d syscalls; want none and 3", sec.GetFlags(), len(sec.GetSyscalls()))
	}
	if sc := sec.GetSyscalls()[0]; strings.Join(sc.GetNames(), ",") != "read,write" || sc.GetAction() != "SCMP_ACT_ALLOW" {
		t.Errorf("syscall 0: %v", sc)
	}
	if a := sec.GetSyscalls()[1].GetArgs(); len(a) != 1 || a[0].GetValue() != 2114060288 || a[0].GetOp() != "SCMP_CMP_MASKED_EQ" {
		t.Errorf("syscall 1 args: %v", a)
	}
	if n := len(sec.GetSyscalls()[2].GetNames()); n != len(many) {
		t.Errorf("syscall 2: %d names, want %d", n, len(many))
	}
}

// TestUpgradeCreateContainer1xLeavesCurrent checks that requests in the
// current layout, or with nothing to upgrade, come back untouched.
func TestUpgradeCreateContainer1xLeavesCurrent(t *testing.T) {
	current := func(flags []string, syscalls ...*agentpb.LinuxSyscall) []byte {
		b, err := proto.Marshal(&agentpb.CreateContainerRequest{ContainerId: "c1", OCI: &agentpb.Spec{
			Hostname: "h",
			Linux: &agentpb.Linux{Seccomp: &agentpb.LinuxSeccomp{
				DefaultAction: "SCMP_ACT_ERRNO", Flags: flags, Syscalls: syscalls,
			}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	allow := &agentpb.LinuxSyscall{Names: []string{"read"}, Action: "SCMP_ACT_ALLOW",
		Args: []*agentpb.LinuxSeccompArg{{Index: 1, Value: 2, Op: "SCMP_CMP_EQ"}}}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"flags and syscalls", current([]string{"SECCOMP_FILTER_FLAG_LOG"}, allow)},
		{"flags only", current([]string{"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"})},
		{"syscalls only", current(nil, allow)},
		{"no seccomp", request1x()},
		{"1.x entry without an action", request1x(enc{}.str(1, "read"))},
		{"not protobuf", []byte{0xff, 0xff, 0xff}},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out := compat.UpgradeCreateContainer1x(tc.in); !bytes.Equal(out, tc.in) {
				t.Errorf("changed:\n in %x\nout %x", tc.in, out)
			}
		})
	}
}
