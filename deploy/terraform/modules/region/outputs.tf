output "seller_url" {
  description = "Shoppers' base URL of this region (the load balancer)."
  value       = var.certificate_arn == "" ? "http://${aws_lb.sellers.dns_name}" : "https://${aws_lb.sellers.dns_name}"
}

output "redis_primary" {
  description = "Redis primary, host:port (sentinels on every Redis node at :26379 follow failovers)."
  value       = "${aws_instance.redis_primary.private_ip}:6379"
}

output "redis_replicas" {
  description = "Redis replicas, host:port."
  value       = [for r in aws_instance.redis_replica : "${r.private_ip}:6379"]
}

output "etcd_endpoints" {
  description = "etcd client URLs (this region's members, or the ones given)."
  value       = local.etcd_endpoints
}

output "coordinator_addresses" {
  description = "Coordinators' gRPC addresses (for the flashsale provider and flashctl); empty outside the control-plane region."
  value       = [for c in aws_instance.coordinator : "${c.private_ip}:7400"]
}

output "security_group_id" {
  description = "The nodes' security group, to let other regions' agents reach etcd."
  value       = aws_security_group.node.id
}
