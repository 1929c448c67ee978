package client

import (
	"context"
	"net/http"
	"net/url"
)

// Phases of an import job (ImportStatus.Phase).
const (
	ImportCopying    = "Copying"    // reading the source's export of the slots
	ImportCatchingUp = "CatchingUp" // following the source's WAL of the slots
	ImportDone       = "Done"       // handed over: the slots are owned here
	ImportFailed     = "Failed"     // stopped for good; Message says why
	ImportCancelled  = "Cancelled"  // cancelled; the partial copy was dropped
)

// ImportRequest starts an import job on the destination shard's primary
// (POST /v1/internal/imports): pull Slots (slots.Set text form) from the primary at
// Source (a base URL), at routing epoch Epoch (the epoch before the handover). Starting
// the same ID again is a no-op that returns the job's status.
type ImportRequest struct {
	ID     string `json:"id"`
	Slots  string `json:"slots"`
	Source string `json:"source"`
	Epoch  uint64 `json:"epoch"`
}

// ImportStatus is the progress of an import job. AppliedSeq is the highest source
// sequence number whose writes to the slots are applied here; SourceSeq the newest
// source sequence number seen. After the source froze the slots at seq F, the copy is
// complete once AppliedSeq >= F.
type ImportStatus struct {
	ID         string `json:"id"`
	Slots      string `json:"slots"`
	Source     string `json:"source"`
	Epoch      uint64 `json:"epoch"`
	Phase      string `json:"phase"`
	Copied     int64  `json:"copied"`
	Bytes      int64  `json:"bytes"`
	AppliedSeq uint64 `json:"appliedSeq"`
	SourceSeq  uint64 `json:"sourceSeq"`
	Message    string `json:"message,omitempty"`
	// ExportSeq is the source sequence number of the export the copy started from.
	ExportSeq uint64 `json:"exportSeq,omitempty"`
	// Copies counts the fresh copies the job started (more than one when the source's
	// WAL no longer held what the job needed after a restart).
	Copies int `json:"copies,omitempty"`
}

// FinishImportRequest is the body of POST /v1/internal/imports/{id}:finish.
type FinishImportRequest struct {
	Epoch uint64 `json:"epoch"`
}

// StartImport starts (or, for a known ID, looks up) an import job on a destination
// primary.
func (c *Client) StartImport(ctx context.Context, req *ImportRequest) (*ImportStatus, error) {
	return c.importCall(ctx, http.MethodPost, "/v1/internal/imports", req)
}

// ImportStatus returns an import job's status; an unknown ID is an *APIError with
// CodeNotFound.
func (c *Client) ImportStatus(ctx context.Context, id string) (*ImportStatus, error) {
	return c.importCall(ctx, http.MethodGet, "/v1/internal/imports/"+url.PathEscape(id), nil)
}

// CancelImport stops an import job and drops its partial copy of the slots. Cancelling
// a job that is Done is refused (CodeConflict): its slots are owned here.
func (c *Client) CancelImport(ctx context.Context, id string) (*ImportStatus, error) {
	return c.importCall(ctx, http.MethodDelete, "/v1/internal/imports/"+url.PathEscape(id), nil)
}

// FinishImport hands the job's slots over at epoch (the epoch of the routing table that
// gives them to this shard): they become owned and visible. Idempotent.
func (c *Client) FinishImport(ctx context.Context, id string, epoch uint64) (*ImportStatus, error) {
	return c.importCall(ctx, http.MethodPost, "/v1/internal/imports/"+url.PathEscape(id)+":finish", &FinishImportRequest{Epoch: epoch})
}

// UnfreezeSlots takes writes to req.Slots again; refused (CodeConflict) when the shard's
// epoch moved past req.Epoch, since the slots may belong to another shard by then.
func (c *Client) UnfreezeSlots(ctx context.Context, req *SlotsRequest) (*SlotsState, error) {
	return c.slotsCall(ctx, "/v1/internal/slots:unfreeze", req)
}

func (c *Client) importCall(ctx context.Context, method, path string, in any) (*ImportStatus, error) {
	var out ImportStatus
	if err := c.Do(ctx, method, path, in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
