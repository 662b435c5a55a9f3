# A flash sale from variables. Destroying it ends the sale; orders stay.
resource "flashsale_sale" "this" {
  id              = var.id
  total           = var.total
  per_user_limit  = var.per_user_limit
  starts_at       = var.starts_at
  ends_at         = var.ends_at
  reservation_ttl = var.reservation_ttl
  regions         = var.regions
}

# Read after the sale exists (it depends on the resource): where the units are.
data "flashsale_allocation" "this" {
  sale = flashsale_sale.this.id
}
