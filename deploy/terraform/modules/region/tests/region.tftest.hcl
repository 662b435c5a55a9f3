# terraform test with a mocked AWS provider (its schema from the local
# plugin mirror, no AWS calls): what the module builds, and its validation.
mock_provider "aws" {
  mock_resource "aws_instance" {
    defaults = { private_ip = "10.0.1.10" }
  }
  mock_resource "aws_network_interface" {
    defaults = { private_ip = "10.0.2.10" }
  }
  # The provider validates ARNs and ids in references: mock real-looking ones.
  mock_resource "aws_lb" {
    defaults = {
      dns_name = "flashsale-us-sellers.elb.example"
      arn      = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/flashsale-us-sellers/50dc6c495c0c9188"
    }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/flashsale-us-sellers/73e2d6bc24d8a067" }
  }
  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/flashsale-us-node" }
  }
  mock_resource "aws_iam_instance_profile" {
    defaults = { arn = "arn:aws:iam::123456789012:instance-profile/flashsale-us-node" }
  }
  mock_resource "aws_ssm_parameter" {
    defaults = { arn = "arn:aws:ssm:us-east-1:123456789012:parameter/flashsale-us/x" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  region             = "us"
  vpc_id             = "vpc-0123456789abcdef0"
  private_subnet_ids = ["subnet-a", "subnet-b"]
  public_subnet_ids  = ["subnet-c", "subnet-d"]
  ami_id             = "ami-0123456789abcdef0"
  admin_token        = "0123456789abcdef0123456789abcdef"
  jwt_secret         = "fedcba9876543210fedcba9876543210"
}

run "control_plane_region" {
  command = apply
  assert {
    condition     = length(aws_instance.etcd) == 3 && length(aws_network_interface.etcd) == 3
    error_message = "a control-plane region runs a three-member etcd"
  }
  assert {
    condition     = length(aws_instance.coordinator) == 2
    error_message = "two coordinators by default"
  }
  assert {
    condition     = length(aws_instance.redis_replica) == 2
    error_message = "a Redis primary and two replicas by default"
  }
  assert {
    condition     = alltrue([for r in concat([aws_instance.redis_primary], aws_instance.redis_replica) : strcontains(r.user_data, "appendfsync always") && strcontains(r.user_data, "appendonly yes")])
    error_message = "every Redis node runs AOF with appendfsync always"
  }
  assert {
    condition     = !strcontains(aws_instance.redis_primary.user_data, "replicaof") && strcontains(aws_instance.redis_replica[0].user_data, "replicaof 10.0.1.10 6379")
    error_message = "replicas follow the primary"
  }
  assert {
    condition     = strcontains(aws_instance.etcd[0].user_data, "ETCD_INITIAL_CLUSTER=etcd-0=http://10.0.2.10:2380,etcd-1=http://10.0.2.10:2380,etcd-2=http://10.0.2.10:2380")
    error_message = "etcd members start with the static three-member cluster"
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.seller.user_data), "-agent") && strcontains(base64decode(aws_launch_template.seller.user_data), "-redis 10.0.1.10:6379")
    error_message = "sellers run an agent candidate against the Redis primary"
  }
  assert {
    condition     = aws_autoscaling_group.sellers.min_size == 2 && aws_lb_target_group.sellers.health_check[0].path == "/healthz"
    error_message = "sellers: two at least, health-checked on /healthz"
  }
  assert {
    condition     = output.seller_url == "http://flashsale-us-sellers.elb.example" && length(output.etcd_endpoints) == 3 && length(output.coordinator_addresses) == 2
    error_message = "outputs"
  }
  assert {
    condition     = length(aws_lb_listener.https) == 0
    error_message = "no HTTPS listener without a certificate"
  }
}

run "edge_region" {
  command = plan
  variables {
    region         = "eu"
    control_plane  = false
    etcd_endpoints = ["http://10.9.0.1:2379", "http://10.9.0.2:2379", "http://10.9.0.3:2379"]
    redis_replicas = 1
  }
  assert {
    condition     = length(aws_instance.etcd) == 0 && length(aws_instance.coordinator) == 0 && length(aws_instance.redis_replica) == 1
    error_message = "an edge region runs no etcd and no coordinator"
  }
  assert {
    condition     = join(",", output.etcd_endpoints) == "http://10.9.0.1:2379,http://10.9.0.2:2379,http://10.9.0.3:2379"
    error_message = "an edge region uses the control plane's etcd"
  }
}

run "edge_region_needs_etcd" {
  command = plan
  variables {
    control_plane = false
  }
  expect_failures = [var.etcd_endpoints]
}

run "short_token" {
  command = plan
  variables {
    admin_token = "short"
  }
  expect_failures = [var.admin_token]
}

run "one_seller" {
  command = plan
  variables {
    sellers = { min = 1, desired = 1 }
  }
  expect_failures = [var.sellers]
}

run "no_replica" {
  command = plan
  variables {
    redis_replicas = 0
  }
  expect_failures = [var.redis_replicas]
}

run "one_subnet" {
  command = plan
  variables {
    private_subnet_ids = ["subnet-a"]
  }
  expect_failures = [var.private_subnet_ids]
}
