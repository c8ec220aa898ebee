package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/kguest/kguest/agent/storage"
	"github.com/kguest/kguest/protocols/agentpb"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// copyFileTarget resolves the request's path below one of the CopyFile
// roots; a relative path is taken relative to the first root. Traversal or
// a symlink out of the roots is InvalidArgument.
func (g *guestState) copyFileTarget(p string) (string, error) {
	if p == "" {
		return "", status.Error(codes.InvalidArgument, "CopyFile: empty path")
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(g.cfg.CopyFileRoots[0], p)
	}
	clean := filepath.Clean(p)
	for _, root := range g.cfg.CopyFileRoots {
		root = filepath.Clean(root)
		if clean != root && !strings.HasPrefix(clean, root+"/") {
			continue
		}
		if err := os.MkdirAll(root, 0o755); err != nil {
			return "", status.Errorf(codes.Internal, "CopyFile: %v", err)
		}
		t, err := storage.Confine(root, clean)
		if err != nil {
			return "", status.Errorf(codes.InvalidArgument, "CopyFile: %v", err)
		}
		if t == root {
			return "", status.Errorf(codes.InvalidArgument, "CopyFile: %s is a shared root itself", p)
		}
		return t, nil
	}
	return "", status.Errorf(codes.InvalidArgument, "CopyFile: %s is not below %s", p, strings.Join(g.cfg.CopyFileRoots, " or "))
}

// CopyFile writes a file (in chunks), directory or symlink the runtime
// copies into the shared directories, as Kata does: chunks go at their
// offset into a temp file next to the target, which gets its mode and
// owner and is renamed into place once the last chunk arrives.
func (a *Agent) CopyFile(_ context.Context, req *agentpb.CopyFileRequest) (*emptypb.Empty, error) {
	g := a.guestServices()
	target, err := g.copyFileTarget(req.GetPath())
	if err != nil {
		return nil, err
	}
	if req.GetOffset() < 0 || req.GetFileSize() < 0 || req.GetOffset()+int64(len(req.GetData())) > req.GetFileSize() &&
		req.GetFileMode()&unix.S_IFMT != unix.S_IFLNK {
		return nil, status.Errorf(codes.InvalidArgument, "CopyFile: chunk at %d+%d beyond file size %d",
			req.GetOffset(), len(req.GetData()), req.GetFileSize())
	}
	g.copyMu.Lock()
	defer g.copyMu.Unlock()

	dirMode := os.FileMode(req.GetDirMode() & 0o777)
	if dirMode == 0 {
		dirMode = 0o750
	}
	if err := os.MkdirAll(filepath.Dir(target), dirMode); err != nil {
		return nil, status.Errorf(codes.Internal, "CopyFile: create parent: %v", err)
	}
	uid, gid := int(req.GetUid()), int(req.GetGid())
	perm := os.FileMode(req.GetFileMode() & 0o777)

	switch req.GetFileMode() & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := os.Mkdir(target, perm); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, status.Errorf(codes.Internal, "CopyFile: %v", err)
		}
		if err := os.Chmod(target, perm); err != nil {
			return nil, status.Errorf(codes.Internal, "CopyFile: %v", err)
		}
		if err := os.Lchown(target, uid, gid); err != nil {
			return nil, status.Errorf(codes.Internal, "CopyFile: %v", err)
		}
		return &emptypb.Empty{}, nil
	case unix.S_IFLNK:
		// The data is the link's target; it is not followed here.
		_ = os.Remove(target)
		if err := os.Symlink(string(req.GetData()), target); err != nil {
			return nil, status.Errorf(codes.Internal, "CopyFile: %v", err)
		}
		if err := os.Lchown(target, uid, gid); err != nil {
			return nil, status.Errorf(codes.Internal, "CopyFile: %v", err)
		}
		return &emptypb.Empty{}, nil
	case 0, unix.S_IFREG:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "CopyFile: unsupported file type %#o", req.GetFileMode()&unix.S_IFMT)
	}

	tmp := filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".copy-tmp")
	flags := os.O_WRONLY | os.O_CREATE
	if req.GetOffset() == 0 {
		flags |= os.O_TRUNC // a new transfer replaces a stale partial one
	}
	f, err := os.OpenFile(tmp, flags|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "CopyFile: %v", err)
	}
	if _, err := f.WriteAt(req.GetData(), req.GetOffset()); err != nil {
		f.Close()
		return nil, status.Errorf(codes.Internal, "CopyFile: write: %v", err)
	}
	if req.GetOffset()+int64(len(req.GetData())) != req.GetFileSize() {
		if err := f.Close(); err != nil {
			return nil, status.Errorf(codes.Internal, "CopyFile: %v", err)
		}
		return &emptypb.Empty{}, nil
	}
	err = errors.Join(f.Chmod(perm), f.Chown(uid, gid), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, target)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return nil, status.Errorf(codes.Internal, "CopyFile: finish %s: %v", target, err)
	}
	return &emptypb.Empty{}, nil
}
