#!/usr/bin/env bash
# `make tf-test`: everything Terraform, offline.
#   1. the provider's unit tests and acceptance tests (TF_ACC=1: the real
#      terraform binary against a coordinator on embedded etcd);
#   2. modules/sale: fmt, validate and `terraform test` (mocked flashsale
#      provider) under dev_overrides, no init;
#   3. examples/quickstart: fmt, get, validate (dev_overrides);
#   4. modules/region: fmt, init from the plugin mirror, validate and
#      `terraform test` (mocked AWS provider, no AWS calls).
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
scripts=$root/deploy/terraform/scripts
"$scripts/cliconfig.sh" --check
tfdir=$root/.tf
"$scripts/cliconfig.sh" "$tfdir" >/dev/null
export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1
tf=$(command -v terraform)

echo "== provider: unit and acceptance tests"
(cd "$root" && TF_ACC=1 TF_ACC_TERRAFORM_PATH="$tf" go test -count=1 -timeout 10m ./deploy/terraform/... ./cmd/terraform-provider-flashsale)

echo "== modules/sale (dev_overrides)"
(
  cd "$root/deploy/terraform/modules/sale"
  export TF_CLI_CONFIG_FILE=$tfdir/dev.tfrc TF_DATA_DIR=$tfdir/data/sale
  terraform fmt -check -recursive
  terraform validate -no-color >/dev/null
  terraform test -no-color
)

echo "== examples/quickstart (dev_overrides)"
(
  cd "$root/deploy/terraform/examples/quickstart"
  export TF_CLI_CONFIG_FILE=$tfdir/dev.tfrc TF_DATA_DIR=$tfdir/data/quickstart
  terraform fmt -check -recursive
  terraform get -no-color >/dev/null
  terraform validate -no-color >/dev/null
  echo "valid"
)

echo "== modules/region (plugin mirror)"
(
  cd "$root/deploy/terraform/modules/region"
  export TF_CLI_CONFIG_FILE=$tfdir/mirror.tfrc TF_DATA_DIR=$tfdir/data/region
  terraform fmt -check -recursive
  terraform init -backend=false -input=false -no-color >/dev/null
  terraform validate -no-color >/dev/null
  terraform test -no-color
)
