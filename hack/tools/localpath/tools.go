//go:build tools

// Package tools records the local-path provisioner built from this module: the default
// StorageClass of the kind node image, as in kind's own images.
package tools

import _ "github.com/rancher/local-path-provisioner"
