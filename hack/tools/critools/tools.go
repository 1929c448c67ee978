//go:build tools

// Package tools records crictl, built from this module for the kind node image (kind's
// `load` and `export logs` call it inside the node).
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
