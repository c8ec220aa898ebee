// Package compat reads what older Kata hosts send where their schema
// differs from the current one, at the wire level.
package compat

import (
	"bytes"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers on the path to a container's seccomp profile, and the
// layouts that differ between Kata 1.x and the current API.
const (
	fieldCreateContainerOCI protowire.Number = 6 // CreateContainerRequest.OCI
	fieldSpecLinux          protowire.Number = 8 // Spec.Linux
	fieldLinuxSeccomp       protowire.Number = 8 // Linux.Seccomp

	// LinuxSeccomp: 1.x Syscalls=3; now Flags=3 (strings), Syscalls=4.
	fieldSeccompSyscalls1x protowire.Number = 3
	fieldSeccompSyscalls   protowire.Number = 4
	// LinuxSyscall: 1.x Args=3; now ErrnoRet=3 (varint), Args=4.
	fieldSyscallArgs1x protowire.Number = 3
	fieldSyscallArgs   protowire.Number = 4
)

// UpgradeCreateContainer1x rewrites an encoded CreateContainerRequest whose
// seccomp profile is in the Kata 1.x layout into the current one. A 1.x host
// numbers LinuxSeccomp.Syscalls 3, where the current API has Flags, a
// repeated string: decoded as is, its syscall rules become bogus flags or
// fail to decode as invalid UTF-8.
//
// The 1.x layout is recognised only when the profile has no current
// Syscalls and every field-3 entry parses as a 1.x LinuxSyscall with names
// and an SCMP_ACT_ action; a seccomp flag ("SECCOMP_FILTER_FLAG_...") never
// parses so. Anything else is returned unchanged (the same slice).
func UpgradeCreateContainer1x(b []byte) []byte {
	out, ok := rewriteNested(b, []protowire.Number{fieldCreateContainerOCI, fieldSpecLinux, fieldLinuxSeccomp}, upgradeSeccomp1x)
	if !ok {
		return b
	}
	return out
}

// rewriteNested applies fn to the message at path (a chain of embedded
// message fields) and re-encodes the messages around it. ok is false when
// nothing changed or b does not parse.
func rewriteNested(b []byte, path []protowire.Number, fn func([]byte) ([]byte, bool)) ([]byte, bool) {
	if len(path) == 0 {
		return fn(b)
	}
	var out []byte
	changed := false
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return nil, false
		}
		field := rest[:n+m]
		if num == path[0] && typ == protowire.BytesType {
			inner, _ := protowire.ConsumeBytes(rest[n:])
			if nb, ok := rewriteNested(inner, path[1:], fn); ok {
				out = protowire.AppendTag(out, num, protowire.BytesType)
				out = protowire.AppendBytes(out, nb)
				changed = true
				rest = rest[n+m:]
				continue
			}
		}
		out = append(out, field...)
		rest = rest[n+m:]
	}
	return out, changed
}

// upgradeSeccomp1x turns the 1.x LinuxSyscall entries of an encoded
// LinuxSeccomp into current ones.
func upgradeSeccomp1x(b []byte) ([]byte, bool) {
	var out []byte
	found := false
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return nil, false
		}
		switch {
		case num == fieldSeccompSyscalls:
			return nil, false // current layout
		case num == fieldSeccompSyscalls1x && typ == protowire.BytesType:
			v, _ := protowire.ConsumeBytes(rest[n:])
			sc, ok := upgradeSyscall1x(v)
			if !ok {
				return nil, false // a flag: current layout
			}
			out = protowire.AppendTag(out, fieldSeccompSyscalls, protowire.BytesType)
			out = protowire.AppendBytes(out, sc)
			found = true
		default:
			out = append(out, rest[:n+m]...)
		}
		rest = rest[n+m:]
	}
	return out, found
}

// upgradeSyscall1x checks that b is a 1.x LinuxSyscall (Names=1, Action=2,
// Args=3, all length-delimited, with a name and an SCMP_ACT_ action) and
// renumbers its Args.
func upgradeSyscall1x(b []byte) ([]byte, bool) {
	var out []byte
	names, action := false, false
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 || typ != protowire.BytesType || num < 1 || num > 3 {
			return nil, false
		}
		v, m := protowire.ConsumeBytes(rest[n:])
		if m < 0 {
			return nil, false
		}
		switch num {
		case 1:
			names = true
		case 2:
			action = bytes.HasPrefix(v, []byte("SCMP_ACT_"))
		case fieldSyscallArgs1x:
			num = fieldSyscallArgs
		}
		out = protowire.AppendTag(out, num, protowire.BytesType)
		out = protowire.AppendBytes(out, v)
		rest = rest[n+m:]
	}
	return out, names && action
}
