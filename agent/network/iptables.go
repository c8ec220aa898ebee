package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"

	"github.com/kguest/kguest/init/reaper"
)

// ErrNoTool is returned when the iptables tools are not in the guest.
var ErrNoTool = errors.New("tool not installed")

func iptablesTool(v6 bool, verb string) (string, error) {
	name := "iptables-" + verb
	if v6 {
		name = "ip6tables-" + verb
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: %s is not in the guest's PATH", ErrNoTool, name)
	}
	return p, nil
}

// GetIPTables returns iptables-save (or ip6tables-save) output.
func GetIPTables(ctx context.Context, v6 bool) ([]byte, error) {
	tool, err := iptablesTool(v6, "save")
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(tool)
	cmd.Stderr = &stderr
	out, err := reaper.Output(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", tool, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// SetIPTables feeds rules to iptables-restore (or ip6tables-restore) and
// returns its output.
func SetIPTables(ctx context.Context, v6 bool, rules []byte) ([]byte, error) {
	tool, err := iptablesTool(v6, "restore")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(tool)
	cmd.Stdin = bytes.NewReader(rules)
	out, err := reaper.CombinedOutput(ctx, cmd)
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", tool, err, bytes.TrimSpace(out))
	}
	return out, nil
}
