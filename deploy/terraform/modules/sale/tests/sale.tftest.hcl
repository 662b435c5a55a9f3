# terraform test with a mocked flashsale provider: the module's wiring and
# its validation blocks, no coordinator needed. The provider itself is
# tested against a real coordinator (deploy/terraform/provider acc tests).
mock_provider "flashsale" {
  mock_resource "flashsale_sale" {
    defaults = { state = "active" }
  }
  mock_data "flashsale_allocation" {
    # Nested lists cannot be mocked as literals; the mock generates them.
    defaults = { unallocated = 200 }
  }
}

variables {
  id        = "phone"
  total     = 1000
  starts_at = "2030-01-01T12:00:00Z"
  ends_at   = "2030-01-01T13:00:00Z"
  regions = {
    us = { weight = 2 }
    eu = {}
  }
}

run "defaults" {
  command = apply
  assert {
    condition     = flashsale_sale.this.per_user_limit == 1 && flashsale_sale.this.reservation_ttl == "10m"
    error_message = "per_user_limit and reservation_ttl defaults not passed through"
  }
  assert {
    condition     = flashsale_sale.this.regions["eu"].weight == 1 && flashsale_sale.this.regions["us"].weight == 2
    error_message = "region weights not passed through"
  }
  assert {
    condition     = output.id == "phone" && output.state == "active" && output.unallocated == 200
    error_message = "outputs"
  }
}

run "bad_id" {
  command = plan
  variables { id = "no/slash" }
  expect_failures = [var.id]
}

run "zero_total" {
  command = plan
  variables { total = 0 }
  expect_failures = [var.total]
}

run "bad_time" {
  command = plan
  variables { starts_at = "tomorrow" }
  expect_failures = [var.starts_at]
}

run "ends_before_start" {
  command = plan
  variables { ends_at = "2030-01-01T11:00:00Z" }
  expect_failures = [var.ends_at]
}

run "bad_ttl" {
  command = plan
  variables { reservation_ttl = "5 minutes" }
  expect_failures = [var.reservation_ttl]
}

run "no_regions" {
  command = plan
  variables { regions = {} }
  expect_failures = [var.regions]
}

run "max_below_min" {
  command = plan
  variables { regions = { us = { min = 10, max = 5 } } }
  expect_failures = [var.regions]
}

run "minimums_above_total" {
  command = plan
  variables {
    total   = 10
    regions = { us = { min = 6 }, eu = { min = 6 } }
  }
  expect_failures = [var.regions]
}
