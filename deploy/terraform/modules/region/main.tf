# One region of a flashsale deployment on AWS: Redis (AOF, fsync always)
# with replicas and sentinels, the sellers (each an agent candidate)
# behind an application load balancer, and, in the control-plane region,
# a three-member etcd and the coordinators.

locals {
  name = "flashsale-${var.region}"
  tags = merge(var.tags, { "flashsale:region" = var.region })
  # etcd members get fixed addresses (their network interfaces are made
  # first), so the static initial cluster is known before they boot.
  etcd_members = var.control_plane ? {
    for i in range(3) : "etcd-${i}" => aws_network_interface.etcd[i].private_ip
  } : {}
  etcd_endpoints = var.control_plane ? [for ip in values(local.etcd_members) : "http://${ip}:2379"] : var.etcd_endpoints
  redis_primary  = aws_instance.redis_primary.private_ip
  quorum         = floor((1 + var.redis_replicas) / 2) + 1 # sentinels that must agree on a failover
}

data "aws_subnet" "private" {
  count = length(var.private_subnet_ids)
  id    = var.private_subnet_ids[count.index]
}

# --- secrets: in SSM, read by the instances' role at boot ---

resource "aws_ssm_parameter" "admin_token" {
  name  = "/${local.name}/admin-token"
  type  = "SecureString"
  value = var.admin_token
  tags  = local.tags
}

resource "aws_ssm_parameter" "jwt_secret" {
  name  = "/${local.name}/jwt-secret"
  type  = "SecureString"
  value = var.jwt_secret
  tags  = local.tags
}

resource "aws_ssm_parameter" "orders_dsn" {
  count = var.orders_dsn == "" ? 0 : 1
  name  = "/${local.name}/orders-dsn"
  type  = "SecureString"
  value = var.orders_dsn
  tags  = local.tags
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "read_secrets" {
  statement {
    actions   = ["ssm:GetParameter"]
    resources = concat([aws_ssm_parameter.admin_token.arn, aws_ssm_parameter.jwt_secret.arn], aws_ssm_parameter.orders_dsn[*].arn)
  }
}

resource "aws_iam_role" "node" {
  name               = "${local.name}-node"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "read_secrets" {
  name   = "read-secrets"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.read_secrets.json
}

resource "aws_iam_instance_profile" "node" {
  name = "${local.name}-node"
  role = aws_iam_role.node.name
}

# --- security groups: the load balancer faces shoppers; the rest is private ---

resource "aws_security_group" "lb" {
  name        = "${local.name}-lb"
  description = "Shoppers to the sellers' load balancer"
  vpc_id      = var.vpc_id
  tags        = local.tags
  ingress {
    description = "HTTP"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  ingress {
    description = "HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "node" {
  name        = "${local.name}-node"
  description = "flashsale nodes: sellers, Redis, etcd, coordinators (talk among themselves)"
  vpc_id      = var.vpc_id
  tags        = local.tags
  ingress {
    description     = "Sellers from the load balancer"
    from_port       = 8080
    to_port         = 8080
    protocol        = "tcp"
    security_groups = [aws_security_group.lb.id]
  }
  ingress {
    description = "Node to node: Redis 6379, sentinel 26379, etcd 2379-2380, coordinator gRPC 7400"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    self        = true
  }
  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# --- Redis: a primary and replicas, AOF fsync always everywhere, a sentinel on each ---

resource "aws_instance" "redis_primary" {
  ami                    = var.ami_id
  instance_type          = var.instance_types.redis
  subnet_id              = var.private_subnet_ids[0]
  vpc_security_group_ids = [aws_security_group.node.id]
  iam_instance_profile   = aws_iam_instance_profile.node.name
  user_data              = templatefile("${path.module}/templates/redis.sh.tftpl", { primary = "", quorum = local.quorum, region = var.region })
  root_block_device {
    volume_type = "gp3"
    volume_size = 50
    encrypted   = true
  }
  tags = merge(local.tags, { Name = "${local.name}-redis-0", "flashsale:role" = "redis-primary" })
}

resource "aws_instance" "redis_replica" {
  count                  = var.redis_replicas
  ami                    = var.ami_id
  instance_type          = var.instance_types.redis
  subnet_id              = var.private_subnet_ids[(count.index + 1) % length(var.private_subnet_ids)]
  vpc_security_group_ids = [aws_security_group.node.id]
  iam_instance_profile   = aws_iam_instance_profile.node.name
  user_data = templatefile("${path.module}/templates/redis.sh.tftpl", {
    primary = aws_instance.redis_primary.private_ip
    quorum  = local.quorum
    region  = var.region
  })
  root_block_device {
    volume_type = "gp3"
    volume_size = 50
    encrypted   = true
  }
  tags = merge(local.tags, { Name = "${local.name}-redis-${count.index + 1}", "flashsale:role" = "redis-replica" })
  lifecycle {
    # After a sentinel failover the first primary may be a replica: a
    # changed address must not replace the replicas.
    ignore_changes = [user_data]
  }
}

# --- etcd: three members with fixed addresses (control-plane region) ---

resource "aws_network_interface" "etcd" {
  count           = var.control_plane ? 3 : 0
  subnet_id       = var.private_subnet_ids[count.index % length(var.private_subnet_ids)]
  security_groups = [aws_security_group.node.id]
  tags            = merge(local.tags, { Name = "${local.name}-etcd-${count.index}" })
}

resource "aws_instance" "etcd" {
  count                = var.control_plane ? 3 : 0
  ami                  = var.ami_id
  instance_type        = var.instance_types.etcd
  iam_instance_profile = aws_iam_instance_profile.node.name
  network_interface {
    network_interface_id = aws_network_interface.etcd[count.index].id
    device_index         = 0
  }
  user_data = templatefile("${path.module}/templates/etcd.sh.tftpl", {
    name    = "etcd-${count.index}"
    ip      = aws_network_interface.etcd[count.index].private_ip
    cluster = join(",", [for n, ip in local.etcd_members : "${n}=http://${ip}:2380"])
    token   = local.name
  })
  root_block_device {
    volume_type = "gp3"
    volume_size = 30
    iops        = 6000 # etcd's fsync latency is its write latency
    encrypted   = true
  }
  tags = merge(local.tags, { Name = "${local.name}-etcd-${count.index}", "flashsale:role" = "etcd" })
}

# --- coordinators (control-plane region): one leads, elected on etcd ---

resource "aws_instance" "coordinator" {
  count                  = var.control_plane ? var.coordinators : 0
  ami                    = var.ami_id
  instance_type          = var.instance_types.coordinator
  subnet_id              = var.private_subnet_ids[count.index % length(var.private_subnet_ids)]
  vpc_security_group_ids = [aws_security_group.node.id]
  iam_instance_profile   = aws_iam_instance_profile.node.name
  user_data = templatefile("${path.module}/templates/coordinator.sh.tftpl", {
    etcd        = join(",", local.etcd_endpoints)
    token_param = aws_ssm_parameter.admin_token.name
  })
  tags       = merge(local.tags, { Name = "${local.name}-coordinator-${count.index}", "flashsale:role" = "coordinator" })
  depends_on = [aws_instance.etcd]
}

# --- sellers: an autoscaling group behind the load balancer; each runs an agent candidate ---

resource "aws_launch_template" "seller" {
  name_prefix            = "${local.name}-seller-"
  image_id               = var.ami_id
  instance_type          = var.instance_types.seller
  vpc_security_group_ids = [aws_security_group.node.id]
  iam_instance_profile {
    name = aws_iam_instance_profile.node.name
  }
  user_data = base64encode(templatefile("${path.module}/templates/seller.sh.tftpl", {
    region       = var.region
    redis        = "${local.redis_primary}:6379"
    etcd         = join(",", local.etcd_endpoints)
    endpoint     = var.certificate_arn == "" ? "http://${aws_lb.sellers.dns_name}" : "https://${aws_lb.sellers.dns_name}"
    jwt_param    = aws_ssm_parameter.jwt_secret.name
    orders_param = one(aws_ssm_parameter.orders_dsn[*].name)
  }))
  metadata_options {
    http_tokens = "required"
  }
  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.name}-seller", "flashsale:role" = "seller" })
  }
}

resource "aws_lb" "sellers" {
  name               = substr("${local.name}-sellers", 0, 32)
  load_balancer_type = "application"
  subnets            = var.public_subnet_ids
  security_groups    = [aws_security_group.lb.id]
  tags               = local.tags
}

resource "aws_lb_target_group" "sellers" {
  name                 = substr("${local.name}-sellers", 0, 32)
  port                 = 8080
  protocol             = "HTTP"
  vpc_id               = var.vpc_id
  deregistration_delay = 15
  health_check {
    path                = "/healthz"
    interval            = 5
    timeout             = 2
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
  tags = local.tags
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.sellers.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.sellers.arn
  }
}

resource "aws_lb_listener" "https" {
  count             = var.certificate_arn == "" ? 0 : 1
  load_balancer_arn = aws_lb.sellers.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.sellers.arn
  }
}

resource "aws_autoscaling_group" "sellers" {
  name                = "${local.name}-sellers"
  min_size            = var.sellers.min
  desired_capacity    = var.sellers.desired
  max_size            = var.sellers.max
  vpc_zone_identifier = var.private_subnet_ids
  target_group_arns   = [aws_lb_target_group.sellers.arn]
  health_check_type   = "ELB"
  launch_template {
    id      = aws_launch_template.seller.id
    version = aws_launch_template.seller.latest_version
  }
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }
  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${local.name}-seller" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
