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

// eachField calls fn for every field of the encoded message b with its
// number, wire type, whole encoding and, when length-delimited, payload. It
// is false when b does not parse or fn returns false.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, field, payload []byte) bool) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return false
		}
		var payload []byte
		if typ == protowire.BytesType {
			payload, _ = protowire.ConsumeBytes(b[n:])
		}
		if !fn(num, typ, b[:n+m], payload) {
			return false
		}
		b = b[n+m:]
	}
	return true
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
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
	parsed := eachField(b, func(num protowire.Number, typ protowire.Type, field, payload []byte) bool {
		if num == path[0] && typ == protowire.BytesType {
			if nb, ok := rewriteNested(payload, path[1:], fn); ok {
				out = appendBytesField(out, num, nb)
				changed = true
				return true
			}
		}
		out = append(out, field...)
		return true
	})
	return out, parsed && changed
}

// upgradeSeccomp1x turns the 1.x LinuxSyscall entries of an encoded
// LinuxSeccomp into current ones.
func upgradeSeccomp1x(b []byte) ([]byte, bool) {
	var out []byte
	found := false
	ok := eachField(b, func(num protowire.Number, typ protowire.Type, field, payload []byte) bool {
		switch {
		case num == fieldSeccompSyscalls:
			return false // current layout
		case num == fieldSeccompSyscalls1x && typ == protowire.BytesType:
			sc, ok := upgradeSyscall1x(payload)
			if !ok {
				return false // a flag: current layout
			}
			out = appendBytesField(out, fieldSeccompSyscalls, sc)
			found = true
		default:
			out = append(out, field...)
		}
		return true
	})
	return out, ok && found
}

// upgradeSyscall1x checks that b is a 1.x LinuxSyscall (Names=1, Action=2,
// Args=3, all length-delimited, with a name and an SCMP_ACT_ action) and
// renumbers its Args.
func upgradeSyscall1x(b []byte) ([]byte, bool) {
	var out []byte
	names, action := false, false
	ok := eachField(b, func(num protowire.Number, typ protowire.Type, _, payload []byte) bool {
		if typ != protowire.BytesType || num < 1 || num > 3 {
			return false
		}
		switch num {
		case 1:
			names = true
		case 2:
			action = bytes.HasPrefix(payload, []byte("SCMP_ACT_"))
		case fieldSyscallArgs1x:
			num = fieldSyscallArgs
		}
		out = appendBytesField(out, num, payload)
		return true
	})
	return out, ok && names && action
}
