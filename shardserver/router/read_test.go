package router

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/balance"
	"github.com/annshard/annshard/shardserver/client"
)

// TestReadShardAttempts drives readShard with a call that answers per replica, over a
// shard of 2 replicas whose hedging threshold is 1ms: at most two replicas are asked,
// a hedge's answer is taken when the first attempt loses or fails, and a winning hedge
// cancels the first attempt.
func TestReadShardAttempts(t *testing.T) {
	unavailable := &client.APIError{Code: client.CodeUnavailable, Message: "down"}
	for _, tc := range []struct {
		name  string
		hedge bool
		// behave answers for the n-th attempt (0: the first) under ctx.
		behave    func(ctx context.Context, n int) (string, error)
		want      string
		wantErr   bool
		wantCalls int32
		cancelled bool // the first attempt must see its context cancelled
	}{
		{"first answers", false, func(ctx context.Context, n int) (string, error) { return "a", nil }, "a", false, 1, false},
		{"first fails: retried on the other", false, func(ctx context.Context, n int) (string, error) {
			if n == 0 {
				return "", unavailable
			}
			return "retry", nil
		}, "retry", false, 2, false},
		{"hedge wins and cancels the first", true, func(ctx context.Context, n int) (string, error) {
			if n == 0 {
				<-ctx.Done()
				return "", ctx.Err()
			}
			return "hedge", nil
		}, "hedge", false, 2, true},
		{"first fails after the hedge started: the hedge's answer", true, func(ctx context.Context, n int) (string, error) {
			if n == 0 {
				time.Sleep(50 * time.Millisecond)
				return "", unavailable
			}
			time.Sleep(100 * time.Millisecond)
			return "hedge", nil
		}, "hedge", false, 2, false},
		{"both fail: two calls, an error", true, func(ctx context.Context, n int) (string, error) {
			time.Sleep(20 * time.Millisecond)
			return "", unavailable
		}, "", true, 2, false},
		{"caller fault is not retried", false, func(ctx context.Context, n int) (string, error) {
			return "", &client.APIError{Code: client.CodeInvalidArgument, Message: "bad"}
		}, "", true, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := newCluster(t, 1, 2, Config{Policy: balance.RoundRobin, HedgePercentile: 50, Timeout: 5 * time.Second})
			s := cl.r.view.Load().shard(0)
			for range minSamples {
				s.lat.record(time.Millisecond)
			}
			var calls atomic.Int32
			var firstCancelled atomic.Bool
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := readShard(ctx, cl.r, s, tc.hedge, "test", func(ctx context.Context, rep *replica) (string, error) {
				n := int(calls.Add(1)) - 1
				v, err := tc.behave(ctx, n)
				if n == 0 && errors.Is(ctx.Err(), context.Canceled) {
					firstCancelled.Store(true)
				}
				return v, err
			})
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %q, %v; want %q (error: %v)", got, err, tc.want, tc.wantErr)
			}
			// A hedge still running when readShard returns is cancelled; give it a moment
			// to be counted, then the count must hold still.
			time.Sleep(150 * time.Millisecond)
			if n := calls.Load(); n != tc.wantCalls {
				t.Fatalf("%d calls, want %d", n, tc.wantCalls)
			}
			if firstCancelled.Load() != tc.cancelled {
				t.Fatalf("first attempt cancelled: %v, want %v", firstCancelled.Load(), tc.cancelled)
			}
		})
	}
}
