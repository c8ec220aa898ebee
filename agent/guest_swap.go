package agent

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"unsafe"

	"github.com/kguest/kguest/init/reaper"
	"github.com/kguest/kguest/protocols/agentpb"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// AddSwap turns the virtio-blk disk at the request's PCI path into swap.
func (a *Agent) AddSwap(ctx context.Context, req *agentpb.AddSwapRequest) (*emptypb.Empty, error) {
	if len(req.GetPCIPath()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "AddSwap: empty PCI path")
	}
	parts := make([]string, len(req.GetPCIPath()))
	for i, s := range req.GetPCIPath() {
		parts[i] = fmt.Sprintf("%02x", s)
	}
	dev, err := a.guestServices().devices.VirtioBlkPCI(ctx, strings.Join(parts, "/"))
	if err != nil {
		return nil, storageStatus(err)
	}
	if err := makeSwap(ctx, dev); err != nil {
		return nil, status.Errorf(codes.Internal, "AddSwap: %v", err)
	}
	if err := swapon(dev); err != nil {
		return nil, status.Errorf(codes.Internal, "AddSwap: swapon %s: %v", dev, err)
	}
	return &emptypb.Empty{}, nil
}

// makeSwap writes a swap header with mkswap, or in Go when the guest has
// no mkswap.
func makeSwap(ctx context.Context, dev string) error {
	if tool, err := exec.LookPath("mkswap"); err == nil {
		if out, err := reaper.CombinedOutput(ctx, exec.Command(tool, dev)); err != nil {
			return fmt.Errorf("mkswap %s: %v: %s", dev, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return writeSwapHeader(dev)
}

// writeSwapHeader writes a version 1 swap header (linux/swap.h
// union swap_header) on the device or file at path.
func writeSwapHeader(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := deviceSize(f)
	if err != nil {
		return err
	}
	page := int64(os.Getpagesize())
	pages := size / page
	if pages < 10 {
		return fmt.Errorf("%s: %d bytes is too small for swap", path, size)
	}
	hdr := make([]byte, page)
	// bootbits[1024], then version, last_page, nr_badpages, uuid[16], label[16].
	binary.LittleEndian.PutUint32(hdr[1024:], 1)
	binary.LittleEndian.PutUint32(hdr[1028:], uint32(pages-1))
	uuid := hdr[1036:1052]
	if _, err := rand.Read(uuid); err != nil {
		return err
	}
	uuid[6] = uuid[6]&0x0f | 0x40 // version 4
	uuid[8] = uuid[8]&0x3f | 0x80 // RFC 4122 variant
	copy(hdr[page-10:], "SWAPSPACE2")
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("write swap header: %w", err)
	}
	return f.Sync()
}

func deviceSize(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode().IsRegular() {
		return st.Size(), nil
	}
	var size uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); e != 0 {
		return 0, fmt.Errorf("BLKGETSIZE64: %w", e)
	}
	return int64(size), nil
}

func swapon(path string) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	if _, _, e := unix.Syscall(unix.SYS_SWAPON, uintptr(unsafe.Pointer(p)), 0, 0); e != 0 {
		return e
	}
	return nil
}
