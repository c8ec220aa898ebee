package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	img := filepath.Join(t.TempDir(), "root.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		want    []string // substrings of the joined argv
		notWant []string
		machine string
	}{
		{
			name:    "microvm initrd",
			cfg:     Config{Arch: "x86_64", Kernel: "k", Initrd: "i"},
			want:    []string{"-M microvm,", ",pcie=on", "-device virtio-serial-pci,id=vser0", "name=agent.channel.0", "-initrd i", "-serial chardev:con0", "logfile="},
			notWant: []string{"nvdimm", "-device virtio-serial-device", "pci=off"},
			machine: "microvm",
		},
		{
			name:    "microvm virtio-mmio",
			cfg:     Config{Arch: "x86_64", Kernel: "k", Initrd: "i", MicrovmMMIO: true, Net: true, VirtioFS: []Share{{"vfs", "/dv"}}},
			want:    []string{"-M microvm,", ",pcie=off", "-device virtio-serial-device,id=vser0", "virtio-net-device,netdev=net0", "vhost-user-fs-device,chardev=vfs0,tag=vfs", "pci=off"},
			notWant: []string{"-pci"},
			machine: "microvm",
		},
		{
			name:    "nvdimm forces q35",
			cfg:     Config{Arch: "x86_64", Kernel: "k", Image: img},
			want:    []string{"-M q35,accel=tcg,nvdimm=on", "memory-backend-file,id=mem1,share=on,mem-path=" + img, "-device nvdimm,id=nv0,memdev=mem1", "slots=2,maxmem=257M", "root=/dev/pmem0p1", "rootflags=dax,data=ordered", "virtio-serial-pci"},
			machine: "q35",
		},
		{
			name:    "virtio-blk root",
			cfg:     Config{Arch: "x86_64", Kernel: "k", Image: img, RootMode: RootVirtioBlk},
			want:    []string{"root=/dev/vda1", "virtio-blk-pci,drive=root0"},
			notWant: []string{"nvdimm", "dax"},
			machine: "microvm",
		},
		{
			name: "shares, net, drives",
			cfg: Config{Arch: "x86_64", Kernel: "k", Net: true,
				Shares9p: []Share{{"s9", "/d9"}}, VirtioFS: []Share{{"vfs", "/dv"}},
				Drives: []Drive{{ID: "d0", Path: "/x"}, {ID: "d1", Path: "/y", SCSI: true}}},
			want: []string{"virtio-net-pci,netdev=net0", "virtio-9p-pci,fsdev=fs9p0,mount_tag=s9", "vhost-user-fs-pci,chardev=vfs0,tag=vfs",
				"memory-backend-memfd,id=mem,size=256M,share=on", "-numa node,memdev=mem", "virtio-blk-pci,drive=d0,serial=d0", "virtio-scsi-pci,id=scsi0", "scsi-hd,drive=d1"},
			machine: "microvm",
		},
		{
			name:    "hotplug",
			cfg:     Config{Arch: "x86_64", Kernel: "k", CPUs: 1, MaxCPUs: 2, MaxMemoryMiB: 1024},
			want:    []string{"-smp 1,maxcpus=2", "-m 256M,slots=2,maxmem=1024M", "-M q35"},
			machine: "q35",
		},
		{
			name:    "arm64",
			cfg:     Config{Arch: "arm64", Kernel: "k", Initrd: "i"},
			want:    []string{"-M virt", "-cpu max", "virtio-serial-pci", "console=ttyAMA0", "server=on,wait=off,logfile="},
			notWant: []string{"tsc_early_khz"},
		},
		{
			name: "s390x",
			cfg:  Config{Arch: "s390x", Kernel: "k", Initrd: "i"},
			want: []string{"-M s390-ccw-virtio", "virtio-serial-ccw", "sclpconsole,chardev=con0", "console=ttysclp0", "server=on,wait=on,logfile="},
		},
		{
			name:    "s390x virtio-fs: shared RAM without NUMA",
			cfg:     Config{Arch: "s390x", Kernel: "k", Initrd: "i", VirtioFS: []Share{{"vfs", "/dv"}}},
			want:    []string{"-M s390-ccw-virtio,accel=tcg,memory-backend=mem", "memory-backend-memfd,id=mem,size=256M,share=on", "vhost-user-fs-ccw,chardev=vfs0,tag=vfs"},
			notWant: []string{"-numa"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.defaults()
			vm := &VM{Dir: "/r", AgentSock: "/r/agent.sock", ConsoleSock: "/r/console.sock", ConsoleLog: "/r/console.log", QMPSock: "/r/qmp.sock"}
			args, err := cfg.args(vm)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(args, " ")
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("argv lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("argv has %q:\n%s", w, got)
				}
			}
			if tt.machine != "" && cfg.Machine != tt.machine {
				t.Errorf("machine = %q, want %q", cfg.Machine, tt.machine)
			}
		})
	}
}

func TestTail(t *testing.T) {
	if got := Tail("a\nb\nc\n", 2); got != "b\nc" {
		t.Errorf("Tail = %q", got)
	}
	if got := Tail("a", 5); got != "a" {
		t.Errorf("Tail = %q", got)
	}
}

func TestHostTSCkHz(t *testing.T) {
	if HostArch() != "x86_64" {
		t.Skip("x86 only")
	}
	b, _ := os.ReadFile("/proc/cpuinfo")
	if !constTSCs.Match(b) {
		t.Skip("host TSC is not constant")
	}
	if k := HostTSCkHz(); k < 100000 {
		t.Fatalf("HostTSCkHz = %d", k)
	}
}
