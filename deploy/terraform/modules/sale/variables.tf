variable "id" {
  description = "Sale id. Ids are never reused, even after a sale ends: a new id is a new sale."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", var.id))
    error_message = "id must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit."
  }
}

variable "total" {
  description = "Units for sale in all regions together. Lowering it below what is sold and reserved is refused."
  type        = number
  validation {
    condition     = var.total >= 1 && floor(var.total) == var.total
    error_message = "total must be a whole number of at least 1."
  }
}

variable "per_user_limit" {
  description = "Units one buyer may hold across regions. Changing it needs a new id."
  type        = number
  default     = 1
  validation {
    condition     = var.per_user_limit >= 1 && floor(var.per_user_limit) == var.per_user_limit
    error_message = "per_user_limit must be a whole number of at least 1."
  }
}

variable "starts_at" {
  description = "Opening time, RFC 3339 in UTC (2026-11-24T12:00:00Z)."
  type        = string
  validation {
    condition     = can(timecmp(var.starts_at, var.starts_at))
    error_message = "starts_at must be an RFC 3339 time such as 2026-11-24T12:00:00Z."
  }
}

variable "ends_at" {
  description = "Closing time, RFC 3339, after starts_at."
  type        = string
  validation {
    condition     = can(timecmp(var.ends_at, var.ends_at))
    error_message = "ends_at must be an RFC 3339 time such as 2026-11-24T13:00:00Z."
  }
  validation {
    condition     = !can(timecmp(var.ends_at, var.starts_at)) || try(timecmp(var.ends_at, var.starts_at) > 0, false)
    error_message = "ends_at must be after starts_at."
  }
}

variable "reservation_ttl" {
  description = "How long a reservation waits for payment, a Go duration such as 90s or 5m."
  type        = string
  default     = "10m"
  validation {
    condition     = can(regex("^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$", var.reservation_ttl))
    error_message = "reservation_ttl must be a Go duration such as 90s, 5m or 1h30m."
  }
}

variable "regions" {
  description = "Regions selling, keyed by name, with weight (share of grants, default 1), min and max (0: none) units."
  type = map(object({
    weight = optional(number, 1)
    min    = optional(number, 0)
    max    = optional(number, 0)
  }))
  validation {
    condition     = length(var.regions) > 0
    error_message = "regions must name at least one region."
  }
  validation {
    condition     = alltrue([for name in keys(var.regions) : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", name))])
    error_message = "Each region name must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit."
  }
  validation {
    condition     = alltrue([for r in values(var.regions) : r.weight >= 1 && r.min >= 0 && r.max >= 0])
    error_message = "Each region's weight must be at least 1, its min and max not negative."
  }
  validation {
    condition     = alltrue([for r in values(var.regions) : r.max == 0 || r.max >= r.min])
    error_message = "A region's max (0: none) must not be below its min."
  }
  validation {
    condition     = sum(concat([0], [for r in values(var.regions) : r.min])) <= var.total
    error_message = "The regions' minimums must not sum above total."
  }
}
