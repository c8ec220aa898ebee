package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// ErrInvalid marks storages that are malformed or point outside the
// directories the agent may mount on; the RPC layer answers InvalidArgument.
var ErrInvalid = errors.New("invalid storage")

// Confine resolves the absolute path p, which must lie below root, and
// fails with ErrInvalid when a ".." component or a symlink on the way would
// take it out of root. It returns the resolved path.
func Confine(root, p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: path %q is not absolute", ErrInvalid, p)
	}
	rroot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("resolve root %s: %w", root, err)
	}
	root = filepath.Clean(root)
	clean := filepath.Clean(p)
	var rel string
	switch {
	case clean == root:
		rel = "/"
	case strings.HasPrefix(clean, root+"/"):
		rel = clean[len(root):]
	case clean == rroot:
		rel = "/"
	case strings.HasPrefix(clean, rroot+"/"):
		rel = clean[len(rroot):]
	default:
		return "", fmt.Errorf("%w: path %q is outside %s", ErrInvalid, p, root)
	}
	confined, err := securejoin.SecureJoin(rroot, rel)
	if err != nil {
		return "", fmt.Errorf("%w: path %q: %v", ErrInvalid, p, err)
	}
	// SecureJoin clamps an escaping symlink into the root; what the kernel
	// would really follow tells us whether it escaped.
	real, err := resolveExisting(filepath.Join(rroot, rel))
	if err != nil {
		return "", fmt.Errorf("%w: path %q: %v", ErrInvalid, p, err)
	}
	if real != confined {
		return "", fmt.Errorf("%w: path %q leaves %s through a symlink (to %s)", ErrInvalid, p, root, real)
	}
	return confined, nil
}

// resolveExisting follows symlinks in the longest existing prefix of p and
// appends the rest.
func resolveExisting(p string) (string, error) {
	rest := ""
	cur := p
	for {
		r, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		if !os.IsNotExist(err) {
			return "", err
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p, nil
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}
