package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// ExportSlots streams the vectors stored in a slot set (text form "0-255,300") to fn,
// batch by batch. It returns the shard's sequence number at the start of the export:
// replay SlotWAL from seq+1 over the exported vectors to catch up.
func (c *Client) ExportSlots(ctx context.Context, slotSet string, fn func(SlotRecord) error) (uint64, error) {
	var seq uint64
	err := c.stream(ctx, "/v1/internal/slots:export?slots="+url.QueryEscape(slotSet), func(r SlotRecord) error {
		seq = r.Seq
		if len(r.Upserts) == 0 {
			return nil // the end marker
		}
		return fn(r)
	})
	return seq, err
}

// SlotWAL streams the writes to a slot set in the records after from (from itself
// included) to fn. With until > 0 it returns after record until; with until 0 it follows
// the live log until ctx ends, and fn also sees heartbeats (no upserts, no deletes) that
// carry the shard's last sequence number.
func (c *Client) SlotWAL(ctx context.Context, slotSet string, from, until uint64, fn func(SlotRecord) error) error {
	q := url.Values{"slots": {slotSet}, "from": {strconv.FormatUint(from, 10)}}
	if until > 0 {
		q.Set("until", strconv.FormatUint(until, 10))
	}
	return c.stream(ctx, "/v1/internal/slots:wal?"+q.Encode(), func(r SlotRecord) error {
		if until > 0 && len(r.Upserts) == 0 && len(r.Deletes) == 0 {
			return nil // heartbeat or end marker
		}
		return fn(r)
	})
}

// errStreamCut is returned when a slot stream ends without its end marker.
var errStreamCut = errors.New("slot stream ended early")

// stream reads a newline-delimited SlotRecord stream; a stream cut before its final
// line (a marker whose Seq closes it) is an error, so a partial export never looks whole.
func (c *Client) stream(ctx context.Context, path string, fn func(SlotRecord) error) error {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	var last SlotRecord
	sawAny := false
	for sc.Scan() {
		var r SlotRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("GET %s: bad line: %w", path, err)
		}
		if err := fn(r); err != nil {
			return err
		}
		last, sawAny = r, true
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !sawAny || len(last.Upserts) != 0 || len(last.Deletes) != 0 {
		return fmt.Errorf("GET %s: %w", path, errStreamCut)
	}
	return nil
}
