// Package provider is the Terraform provider "flashsale" on
// terraform-plugin-framework: the resource flashsale_sale and the data
// sources flashsale_sale and flashsale_allocation, all over the
// coordinator's gRPC admin API (coordinator/api).
//
// Terraform manages a sale's definition (total, regions with weights and
// bounds, window, limits), never its run state: an operator's pause,
// resume or drain is not drift, and destroying the resource ends the sale
// (orders are never deleted). It must never write etcd or Redis itself:
// every change goes through the coordinator, which enforces the
// invariants.
package provider
