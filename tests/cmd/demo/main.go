// Command demo builds the agent, the kernel (cached) and an initrd with the
// project's own commands, boots a VM under QEMU, runs `echo hello from the
// guest` in a busybox container through the agent, and prints the timings.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kguest/kguest/protocols/agentpb"
	"github.com/kguest/kguest/protocols/client"
	"github.com/kguest/kguest/tests/artifacts"
	"github.com/kguest/kguest/tests/guest"
	"github.com/kguest/kguest/tests/qemu"
)

func main() {
	arch := flag.String("arch", qemu.HostArch(), "guest architecture")
	kernel := flag.String("kernel", "", "boot this kernel instead of building one with osbuilder")
	flag.Parse()
	if err := run(*arch, *kernel); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(name string, start time.Time) {
	fmt.Printf("  %-40s %8s\n", name, time.Since(start).Round(time.Millisecond))
}

func run(arch, kernel string) error {
	ctx := context.Background()
	artifacts.Log = func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }
	fmt.Println("building (cached where nothing changed):")
	t := time.Now()
	tools, err := artifacts.Build(ctx, arch)
	if err != nil {
		return err
	}
	step("agent, agent-ctl, osbuilder", t)
	t = time.Now()
	fmt.Println("  kernel: osbuilder kernel (a first build takes a while; then cached)")
	k := &artifacts.Kernel{Boot: kernel}
	if kernel == "" {
		if k, err = artifacts.BuildKernel(ctx, tools, arch); err != nil {
			return err
		}
	}
	step("kernel "+filepath.Base(k.Boot), t)
	t = time.Now()
	initrd, err := artifacts.BuildInitrd(ctx, tools, arch, artifacts.RootfsOptions{}, "gzip")
	if err != nil {
		return err
	}
	step(fmt.Sprintf("initrd (%d KiB)", initrd.Size>>10), t)

	share, err := os.MkdirTemp("", "kguest-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(share)
	if err := artifacts.BusyboxRootfs(filepath.Join(share, "demo", "rootfs")); err != nil {
		return err
	}

	fmt.Println("booting the VM (QEMU, TCG):")
	vm, err := qemu.Start(ctx, qemu.Config{Arch: arch, Kernel: k.Boot, Initrd: initrd.Path, Timeout: 15 * time.Minute,
		VirtioFS: []qemu.Share{{Tag: guest.SharedTag, Path: share}}})
	if err != nil {
		return err
	}
	defer vm.Stop()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	g, err := guest.Connect(cctx, vm, client.TTRPC)
	cancel()
	if err != nil {
		return fmt.Errorf("%w\nconsole:\n%s", err, vm.ConsoleTail(30))
	}
	defer g.Close()
	fmt.Printf("  %-40s %8s\n", "boot to agent-ready", g.Ready.Round(time.Millisecond))

	ctx, cancel = context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	v, err := g.Version(ctx, &agentpb.CheckRequest{})
	if err != nil {
		return err
	}
	fmt.Printf("  agent %s (API %s)\n", v.AgentVersion, v.GrpcVersion)
	if _, err := g.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{Hostname: "demo", SandboxId: "demo",
		Storages: []*agentpb.Storage{{Driver: "virtio-fs", Source: guest.SharedTag, Fstype: "virtiofs", MountPoint: guest.SharedDir}}}); err != nil {
		return fmt.Errorf("CreateSandbox: %w", err)
	}
	t = time.Now()
	spec := guest.Spec("demo", guest.SpecOptions{Rootfs: filepath.Join(guest.SharedDir, "demo", "rootfs"), Args: []string{"echo", "hello from the guest"}})
	r, err := g.Run(ctx, "demo", spec)
	if err != nil {
		return err
	}
	d := time.Since(t)
	fmt.Println("container output:")
	fmt.Print(r.Stdout)
	fmt.Printf("  %-40s %8s (exit status %d)\n", "container create→start→exit→remove", d.Round(time.Millisecond), r.Status)
	if r.Status != 0 || r.Stdout != "hello from the guest\n" {
		return fmt.Errorf("unexpected result: %q status %d", r.Stdout, r.Status)
	}
	return nil
}
