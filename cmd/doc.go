// Package cmd holds the binaries: flashsale (the server, with roles) and
// flashctl (the operator CLI). Mains stay thin; logic lives in packages.
package cmd
