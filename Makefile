# Convergence — `make help` lists the targets.

SHELL := /bin/bash
GO ?= go
BIN := bin
TOOLS := $(BIN)/tools
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GOLANGCI_LINT_VERSION := v2.15.0
# Every module of the workspace: the root module and the three that integrators import.
PKGS := ./... ./pkg/events/... ./pkg/api/... ./pkg/client/...

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Check, and where possible install, what building and testing need.
	@scripts/ensure-deps.sh

.PHONY: build
build: ## Build the binary into bin/convergence.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/convergence ./cmd/convergence

.PHONY: run
run: deps build images ## Run the whole platform in one process (embedded JetStream, local PostgreSQL).
	$(BIN)/convergence serve -target=all

.PHONY: test
# The provisioner's packages run in a step of their own, after the rest, with their Docker Swarm
# tests: a swarm on the engine slows every other test that drives it.
SWARM_PKGS := ./services/provisioner/ ./services/provisioner/runtime/

test: deps images ## Run every test against real PostgreSQL, JetStream and Docker (the tenant images first).
	$(GO) test -race -count=1 -p 2 -timeout 15m $$($(GO) list $(PKGS) | grep -vx -e '.*/services/provisioner' -e '.*/services/provisioner/runtime')
	CONVERGENCE_TEST_SWARM=1 $(GO) test -race -count=1 -p 1 -timeout 15m $(SWARM_PKGS)

.PHONY: test-ha
test-ha: deps images ## Run the fault tests under load (internal/ha): a replica killed, a JetStream node stopped, PostgreSQL restarted, a tenant's Swarm task killed.
	CONVERGENCE_TEST_HA=1 CONVERGENCE_TEST_SWARM=1 $(GO) test -count=1 -v -timeout 20m ./internal/ha/

.PHONY: bench
bench: deps ## Run the benchmarks; each prints its figure beside a baseline from the same run.
	$(GO) test -run '^$$' -bench . -benchtime 5000x -timeout 30m ./internal/outbox/
	CONVERGENCE_TEST_SWARM=1 $(GO) test -run '^$$' -bench SpawnToHealthy -benchtime 5x -timeout 30m ./services/provisioner/runtime/
	$(GO) test -run '^$$' -bench SpawnToHealthy -benchtime 5x -timeout 30m ./services/provisioner/
	$(GO) test -run '^$$' -bench Templates -benchtime 5x -timeout 30m ./services/provisioner/
	$(GO) test -run '^$$' -bench ServiceThroughput -benchtime 1x -timeout 30m ./services/converger/
	$(GO) test -run '^$$' -bench EngineRound -benchtime 2000x ./services/converger/engine/
	$(GO) test -run '^$$' -bench SyncConverge -benchtime 300x ./services/api/
	$(GO) test -run '^$$' -bench FairShare -benchtime 10x -timeout 30m ./services/api/
	$(GO) test -run '^$$' -bench BudgetRace -benchtime 1x -timeout 30m ./services/api/
	$(GO) test -run '^$$' -bench . -benchtime 3s -timeout 30m ./services/metering/
	$(GO) test -run '^$$' -bench ConvergeThroughput -benchtime 1x -timeout 30m ./internal/ha/

.PHONY: dashboards
dashboards: ## Write the Grafana dashboards (deploy/grafana/dashboards.go) as JSON, and their list.
	$(GO) run ./deploy/grafana/gen

.PHONY: images
images: ## Build the tenant template images locally: Go (FROM scratch), Node.js and Python (mmdebstrap bases); pulls nothing.
	$(GO) run ./tenant-templates/cmd/tenant-images

.PHONY: images-stack
images-stack: deps build ## Build the compose stack's images FROM scratch from this machine's binaries (pulls nothing).
	deploy/compose/images.sh

.PHONY: up
up: deps images-stack images ## Run the docker compose stack (deploy/compose) and wait until the API is ready.
	deploy/compose/up.sh

.PHONY: down
down: ## Remove the compose stack with its volumes and networks, and the tenants it started.
	deploy/compose/down.sh

.PHONY: up-ha
up-ha: deps images-stack images ## Run the compose stack's HA profile: three JetStream nodes, R3 streams, two replicas of every service.
	HA=1 deploy/compose/up.sh

.PHONY: down-ha
down-ha: ## Remove the HA profile's stack with its volumes and networks, and the tenants it started.
	HA=1 deploy/compose/down.sh

.PHONY: swarm-up
swarm-up: deps build images-stack images ## Run the platform as a Docker Swarm stack (deploy/swarm), making this engine a swarm if it is in none.
	deploy/swarm/up.sh

.PHONY: swarm-down
swarm-down: ## Remove the swarm stack, its tenants, volumes and secrets, and the swarm if swarm-up made it.
	deploy/swarm/down.sh

.PHONY: generate
generate: ## Regenerate the Go types of the HTTP contract (pkg/api/types.gen.go) from pkg/api/openapi.yaml.
	cd pkg/api && $(GO) generate ./

.PHONY: lint
lint: $(TOOLS)/golangci-lint ## gofmt, go vet and golangci-lint.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(TOOLS)/golangci-lint run $(PKGS)

$(TOOLS)/golangci-lint:
	GOBIN=$(abspath $(TOOLS)) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: clean
clean: ## Remove build output (not the data dir).
	rm -rf $(BIN)
