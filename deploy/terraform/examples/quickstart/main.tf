# Quick start: a sale on the `make run` dev stack from the sale module.
# See deploy/terraform/README.md.

terraform {
  required_providers {
    flashsale = { source = "flashsale/flashsale" }
  }
}

# make run's coordinator: 127.0.0.1:7400, token dev-admin-token (or set
# FLASHSALE_ADDR / FLASHSALE_TOKEN and leave these out).
provider "flashsale" {
  address = var.coordinator
  token   = var.token
}

variable "coordinator" {
  type    = string
  default = "127.0.0.1:7400"
}

variable "token" {
  type      = string
  default   = "dev-admin-token"
  sensitive = true
}

variable "starts_in" {
  description = "How long after apply the sale opens."
  type        = string
  default     = "1m"
}

# Times are fixed at the first apply; later plans keep them.
resource "terraform_data" "opening" {
  input = timeadd(plantimestamp(), var.starts_in)
  lifecycle {
    ignore_changes = [input]
  }
}

module "sale" {
  source    = "../../modules/sale"
  id        = "tf-launch"
  total     = 5000
  starts_at = terraform_data.opening.output
  ends_at   = timeadd(terraform_data.opening.output, "2h")
  regions = {
    us = { weight = 2 }
    eu = {}
    ap = { max = 1000 }
  }
}

output "sale" { value = module.sale.id }
output "unallocated" { value = module.sale.unallocated }
