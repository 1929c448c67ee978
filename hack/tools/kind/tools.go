//go:build tools

// Package tools records the kind command built from this module (make test-e2e-kind).
package tools

import _ "sigs.k8s.io/kind"
