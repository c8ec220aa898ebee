# kguest: kata-agent, agent-ctl and osbuilder.
SHELL := /bin/bash
GO ?= go
MODULE := github.com/kguest/kguest
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
ARCH ?= x86_64
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := bin
# Cache for kernels, unpacked kernel sources and e2e artifacts, outside the repository.
KGUEST_CACHE ?= /var/cache/kguest
export KGUEST_CACHE

# POLICY=yes builds the Rego policy engine into the agent.
POLICY ?= no
# grpcnotrace drops grpc's golang.org/x/net/trace and with it text/template,
# whose reflective method calls keep the linker from pruning unused methods:
# the stripped agent shrinks from 17.2 to 13.0 MiB, which the initramfs holds
# in guest memory and the kernel unpacks at every boot.
AGENT_TAGS := netgo osusergo grpcnotrace
# SECCOMP=no builds without libseccomp (a cross-built agent: the host's
# libseccomp.a is for the host's architecture); AgentDetails then says so.
SECCOMP ?= yes
ifeq ($(SECCOMP),yes)
AGENT_TAGS += seccomp
endif
ifeq ($(POLICY),yes)
AGENT_TAGS += policy
endif

VERSION_LDFLAGS := -X $(MODULE)/internal/version.Version=$(VERSION)
GOFLAGS_BUILD := -trimpath
# The agent needs cgo (libcontainer's nsenter, libseccomp) and must be static: it is PID 1 in an initrd with no libc.
AGENT_LDFLAGS := -s -w $(VERSION_LDFLAGS) -linkmode external -extldflags "-static"
TOOL_LDFLAGS := -s -w $(VERSION_LDFLAGS)

# Debian packages the build, the tests and the demo need.
APT_PKGS := gcc libc6-dev libseccomp-dev protobuf-compiler libprotobuf-dev qemu-system-x86 qemu-utils \
	linux-source-6.1 bc flex bison libelf-dev libssl-dev cpio xz-utils zstd busybox-static \
	e2fsprogs erofs-utils iproute2 iptables kmod

.PHONY: all build agent agent-ctl osbuilder deps test test-unit e2e e2e-deps bench demo proto proto-check proto-tools proto-gen lint install clean

all: build

build: agent agent-ctl osbuilder

agent:
	CGO_ENABLED=1 $(GO) build $(GOFLAGS_BUILD) -tags '$(AGENT_TAGS)' -ldflags '$(AGENT_LDFLAGS)' -o $(BINDIR)/kata-agent ./cmd/kata-agent

agent-ctl:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -ldflags '$(TOOL_LDFLAGS)' -o $(BINDIR)/agent-ctl ./cmd/agent-ctl

osbuilder:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -ldflags '$(TOOL_LDFLAGS)' -o $(BINDIR)/osbuilder ./cmd/osbuilder

# Installs missing Debian packages (as root) and Go modules; quick when all is present.
deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(GO) mod download

test: deps lint proto-check build
	$(GO) test -count=1 -timeout 30m $$($(GO) list ./... | grep -v /tests/e2e)
	$(GO) test -count=1 -tags policy ./agent/policy/
	$(GO) test -count=1 -tags policy -run 'Policy' ./agent/
	$(MAKE) e2e

test-unit:
	$(GO) test -count=1 -short ./...

# End-to-end tests in QEMU (TCG); artifacts are cached under $(KGUEST_CACHE). E2E_RUN selects tests.
E2E_RUN ?= .
# Another ARCH needs its QEMU and a cross toolchain (kernel and static cgo agent);
# they stay out of `make deps`: cross-arch runs are not part of `make test`.
E2E_PKGS_arm64 := qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross
E2E_PKGS_s390x := qemu-system-misc gcc-s390x-linux-gnu libc6-dev-s390x-cross
e2e: e2e-deps build
	$(GO) test -count=1 -v -timeout 60m -run '$(E2E_RUN)' ./tests/e2e/ -args -arch=$(ARCH)

e2e-deps:
	@case '$(ARCH)' in x86_64|arm64|s390x) ;; *) echo "ARCH=$(ARCH): want x86_64, arm64 or s390x"; exit 1;; esac
	@missing=$$(for p in $(E2E_PKGS_$(ARCH)); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make e2e ARCH=$(ARCH) needs Debian packages that are not installed:" $$missing; \
		echo "  apt-get update && apt-get install --no-install-recommends" $$missing; \
		exit 1; \
	fi

# Prints the benchmark table and writes bench.json. BENCH_FLAGS: e.g. -boots 20 -debian-kernel=false.
bench: build
	$(GO) run ./tests/bench $(BENCH_FLAGS)

demo: deps build
	$(GO) run ./tests/cmd/demo

# Protocol code generation: plugins pinned to the versions in go.mod, installed into .tools/bin.
TOOLS_BIN := $(CURDIR)/.tools/bin
PROTOC ?= protoc
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
PROTOC_GEN_GO_TTRPC_VERSION := v1.2.10
PROTO_DIR := protocols
PROTO_AGENT := agent.proto oci.proto health.proto csi.proto
PROTO_TYPES := types.proto
PROTO_OUT ?= $(PROTO_DIR)

proto-tools:
	GOBIN=$(TOOLS_BIN) GOFLAGS= $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS_BIN) GOFLAGS= $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	GOBIN=$(TOOLS_BIN) GOFLAGS= $(GO) install github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@$(PROTOC_GEN_GO_TTRPC_VERSION)

# Generates agentpb/ and typespb/ under PROTO_OUT.
proto-gen:
	mkdir -p $(PROTO_OUT)/agentpb $(PROTO_OUT)/typespb
	PATH=$(TOOLS_BIN):$$PATH $(PROTOC) -I $(PROTO_DIR) \
		--go_out=paths=source_relative:$(PROTO_OUT)/typespb $(PROTO_TYPES)
	PATH=$(TOOLS_BIN):$$PATH $(PROTOC) -I $(PROTO_DIR) \
		--go_out=paths=source_relative:$(PROTO_OUT)/agentpb \
		--go-grpc_out=paths=source_relative:$(PROTO_OUT)/agentpb \
		--go-ttrpc_out=prefix=TTRPC,paths=source_relative:$(PROTO_OUT)/agentpb \
		$(PROTO_AGENT)

proto: proto-tools
	rm -f $(PROTO_DIR)/agentpb/*.pb.go $(PROTO_DIR)/typespb/*.pb.go
	$(MAKE) --no-print-directory proto-gen PROTO_OUT=$(PROTO_DIR)

# Fails when the committed generated code differs from what the .proto files produce.
proto-check: proto-tools
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(MAKE) --no-print-directory -s proto-gen PROTO_OUT="$$tmp" >/dev/null && \
	for d in agentpb typespb; do \
		diff -r -x '*_test.go' -x '*.md' "$$tmp/$$d" $(PROTO_DIR)/$$d || { echo "protocols/$$d is stale: run make proto"; exit 1; }; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

install: build
	install -D -m 0755 $(BINDIR)/kata-agent $(DESTDIR)$(PREFIX)/bin/kata-agent
	install -D -m 0755 $(BINDIR)/agent-ctl $(DESTDIR)$(PREFIX)/bin/agent-ctl
	install -D -m 0755 $(BINDIR)/osbuilder $(DESTDIR)$(PREFIX)/bin/osbuilder

clean:
	rm -rf $(BINDIR) .tools
