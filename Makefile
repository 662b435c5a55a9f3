# Flash-sale quota coordinator. `make` lists the targets.
SHELL := /bin/bash
GO    ?= go
PKGS  ?= ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## install the servers the tests and dev stack run (redis-server, etcd-server, postgresql)
	@bash scripts/deps.sh

.PHONY: run
run: deps ## the all-in-one dev deployment on embedded defaults (Ctrl-C stops it)
	$(GO) run ./cmd/flashsale dev

.PHONY: test
test: deps ## the whole test suite, against real redis-server, etcd and PostgreSQL (and tf-test)
	$(GO) test -count=1 -timeout 20m $(PKGS)
	@$(MAKE) --no-print-directory tf-test

.PHONY: tf-test
tf-test: ## Terraform: provider acceptance tests (real terraform, real coordinator), modules' terraform test; offline
	bash deploy/terraform/scripts/test.sh

.PHONY: tf-config
tf-config: ## build the flashsale provider into .tf/bin and write .tf/dev.tfrc and .tf/mirror.tfrc
	bash deploy/terraform/scripts/cliconfig.sh .tf

.PHONY: race
race: deps ## the test suite under the race detector
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

.PHONY: sim
sim: ## the protocol simulation over many seeds
	$(GO) run ./simulations/cmd/protosim -seeds 100000

.PHONY: chaos
chaos: deps ## the chaos suite against the real binaries, one scenario at a time (make test runs its short version)
	$(GO) run ./simulations/cmd/chaos

.PHONY: bench
bench: deps ## benchmarks, printing ratios measured side by side in one run
	$(GO) run ./simulations/cmd/bench

.PHONY: bench-quick
bench-quick: deps ## the benchmark table in under a minute
	$(GO) run ./simulations/cmd/bench -quick

.PHONY: lint
lint: ## gofmt, go vet and the seller's OpenAPI document lint (ids, tags, descriptions, no unused components)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -run '^TestOpenAPI(Lint|Document)$$' ./regional/

.PHONY: tidy
tidy: ## go mod tidy
	$(GO) mod tidy

.PHONY: ci
ci: lint test ## what CI runs
