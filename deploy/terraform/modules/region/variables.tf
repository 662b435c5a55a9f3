variable "region" {
  description = "The flashsale region name (us, eu, ap...): what sales list in their regions."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", var.region))
    error_message = "region must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit."
  }
}

variable "vpc_id" {
  description = "VPC to deploy into."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (two or more, in different AZs) for Redis, etcd, the coordinator and the sellers."
  type        = list(string)
  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "Give at least two private subnets, in different availability zones."
  }
}

variable "public_subnet_ids" {
  description = "Public subnets (two or more) for the sellers' load balancer."
  type        = list(string)
  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "An application load balancer needs at least two public subnets."
  }
}

variable "ami_id" {
  description = "AMI with the flashsale binary at /usr/local/bin/flashsale, redis-server and etcd installed (Debian 12 based)."
  type        = string
}

variable "instance_types" {
  description = "EC2 instance types per role."
  type = object({
    seller      = optional(string, "c7i.large")
    redis       = optional(string, "r7i.large")
    etcd        = optional(string, "m7i.large")
    coordinator = optional(string, "m7i.large")
  })
  default = {}
}

variable "sellers" {
  description = "Seller instances behind the load balancer: min, desired and max. Each runs an agent candidate; one is elected."
  type = object({
    min     = optional(number, 2)
    desired = optional(number, 3)
    max     = optional(number, 12)
  })
  default = {}
  validation {
    condition     = var.sellers.min >= 2 && var.sellers.min <= var.sellers.desired && var.sellers.desired <= var.sellers.max
    error_message = "sellers needs 2 <= min <= desired <= max (two at least, so an agent survives a lost instance)."
  }
}

variable "redis_replicas" {
  description = "Redis replicas of the primary (AOF with appendfsync always on every node; sentinel on each)."
  type        = number
  default     = 2
  validation {
    condition     = var.redis_replicas >= 1 && var.redis_replicas <= 5
    error_message = "redis_replicas must be 1 to 5: a region without a replica loses its stock with its primary."
  }
}

variable "control_plane" {
  description = "Run the coordinator and its three-member etcd in this region (one region of the deployment does). Otherwise set etcd_endpoints."
  type        = bool
  default     = true
}

variable "coordinators" {
  description = "Coordinator instances when control_plane is set (one leads, the others stand by)."
  type        = number
  default     = 2
  validation {
    condition     = var.coordinators >= 1 && var.coordinators <= 5
    error_message = "coordinators must be 1 to 5."
  }
}

variable "etcd_endpoints" {
  description = "etcd client URLs of the control-plane region, when control_plane is false."
  type        = list(string)
  default     = []
  validation {
    condition     = var.control_plane || length(var.etcd_endpoints) > 0
    error_message = "Without control_plane, etcd_endpoints must list the control-plane region's etcd client URLs."
  }
}

variable "admin_token" {
  description = "Coordinator admin bearer token (stored in SSM Parameter Store as a SecureString)."
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.admin_token) >= 32
    error_message = "admin_token must be at least 32 characters."
  }
}

variable "jwt_secret" {
  description = "HS256 secret the sellers verify shopper tokens with (SSM SecureString)."
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.jwt_secret) >= 32
    error_message = "jwt_secret must be at least 32 characters."
  }
}

variable "orders_dsn" {
  description = "SQL store the sellers drain orders into (postgres://...). Empty: no order consumer."
  type        = string
  default     = ""
  sensitive   = true
}

variable "certificate_arn" {
  description = "ACM certificate for the HTTPS listener. Empty: HTTP on port 80 only (tests, private setups)."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
