// Package client holds the wire types of annshard's public HTTP API (DESIGN.md section 4)
// and a small Go client for it. The shard server, the router, the operator and the tests
// all speak through these types, so a field added here is added everywhere at once.
//
// JSON naming: the request and response bodies use the names DESIGN.md shows — lower
// camelCase ("upserted", "allowPartial", "missingShards", "inFlight", "walSeq"), with one
// historic exception, "vector_b64", kept because the design fixes it. Vectors travel either
// as a JSON array of numbers or, faster, as base64 of little-endian float32 (EncodeB64).
//
// Errors: every non-2xx answer carries {"error":{"code","message"}}; the client returns it
// as *APIError (use errors.As) with HTTPStatus filled in, so callers can branch on Code
// (for example CodeMoved to refresh a routing table, CodeNotPrimary to find the primary).
//
// Concurrency: a *Client is safe for concurrent use by many goroutines; it holds no
// per-request state. The wire types are plain values with no synchronisation.
package client
