#!/usr/bin/env bash
# Regenerates the Go code of coordinator.proto (the `make proto` step).
# Needs protoc (apt-get install -y protobuf-compiler) and the plugins:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12   # = google.golang.org/protobuf in go.mod
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2  # the version the checked-in code names
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:$(go env GOPATH)/bin"
protoc -I . -I /usr/include \
  --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
  coordinator.proto
