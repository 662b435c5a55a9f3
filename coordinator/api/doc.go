// Package api is the coordinator's gRPC admin API: coordinator.proto and the
// code protoc generates from it (run gen.sh after editing the proto). It
// holds no logic.
package api
