//go:build tools

// Package tools records the CoreDNS command built from this module for the kind node image.
package tools

import _ "github.com/coredns/coredns"
