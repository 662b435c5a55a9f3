output "id" {
  description = "The sale id (for flashctl status <id>)."
  value       = flashsale_sale.this.id
}

output "state" {
  description = "Run state when last read: active, paused or ended."
  value       = flashsale_sale.this.state
}

output "total" {
  description = "The sale's total."
  value       = flashsale_sale.this.total
}

output "unallocated" {
  description = "Units in the pool, not yet granted to a region."
  value       = data.flashsale_allocation.this.unallocated
}

output "regions" {
  description = "Per region: granted, released, net, sold, reserved, available."
  value = { for r in data.flashsale_allocation.this.regions : r.region => {
    granted = r.granted, released = r.released, net = r.net
    sold    = r.sold, reserved = r.reserved, available = r.available
  } }
}
