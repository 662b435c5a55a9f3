// Package deploy holds what platform teams apply: Terraform modules and the
// provider under deploy/terraform (not built yet). It holds no runtime code
// of the server.
package deploy
