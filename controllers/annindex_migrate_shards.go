/*
Copyright 2026 The annshard Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	shardclient "github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/kube"
	"github.com/annshard/annshard/shardserver/slots"
)

// shardCallTimeout bounds one request of the executor to a shard primary.
const shardCallTimeout = 5 * time.Second

// shardPrimary is what the migration executor asks of a shard's primary: its slot
// state (freeze, unfreeze, drop) as the source of a move, its import job as the
// destination (contract B; *shardclient.Client over HTTP). Every call is idempotent, so
// a step repeated after an operator restart does no harm. Tests use a fake.
type shardPrimary interface {
	Slots(ctx context.Context) (*shardclient.SlotsState, error)
	FreezeSlots(ctx context.Context, req *shardclient.SlotsRequest) (*shardclient.SlotsState, error)
	UnfreezeSlots(ctx context.Context, req *shardclient.SlotsRequest) (*shardclient.SlotsState, error)
	DropSlots(ctx context.Context, req *shardclient.SlotsRequest) (*shardclient.SlotsState, error)
	StartImport(ctx context.Context, req *shardclient.ImportRequest) (*shardclient.ImportStatus, error)
	ImportStatus(ctx context.Context, id string) (*shardclient.ImportStatus, error)
	CancelImport(ctx context.Context, id string) (*shardclient.ImportStatus, error)
	FinishImport(ctx context.Context, id string, epoch uint64) (*shardclient.ImportStatus, error)
	// BaseURL is where other shards reach this primary (the import's source).
	BaseURL() string
}

var _ shardPrimary = (*shardclient.Client)(nil)

// ShardDialer opens the internal API of the primary of shard k of idx; the reconciler
// uses dialShardPrimary when it is nil.
type ShardDialer func(ctx context.Context, idx *annv1alpha1.AnnIndex, k int32) (shardPrimary, error)

// errPrimaryNotReady is returned by dialShardPrimary for a shard whose primary pod is
// not ready, or has no address yet.
var errPrimaryNotReady = errors.New("primary not ready")

// dialShardPrimary reaches ordinal 0 of shard k at podURL with the index's token.
func (r *AnnIndexReconciler) dialShardPrimary(ctx context.Context, idx *annv1alpha1.AnnIndex, k int32) (shardPrimary, error) {
	if r.Shards != nil {
		return r.Shards(ctx, idx, k)
	}
	name := shardName(idx, k) + "-0"
	p := &corev1.Pod{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: idx.Namespace, Name: name}, p); err != nil {
		return nil, fmt.Errorf("shard %d: reading pod %s: %w", k, name, err)
	}
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" || !kube.PodReady(p) {
		return nil, fmt.Errorf("shard %d: %w (pod %s)", k, errPrimaryNotReady, name)
	}
	token, err := r.indexToken(ctx, idx)
	if err != nil {
		return nil, err
	}
	hc := r.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: shardCallTimeout}
	}
	return shardclient.New(podURL(p),
		shardclient.WithToken(token), shardclient.WithHTTPClient(hc)), nil
}

// ownsNoSlot says whether a shard's slot state shows it owns no slot. A state that does
// not parse is not empty (err says why): the shard and its data are removed only on a
// clear "nothing".
func ownsNoSlot(st *shardclient.SlotsState) (bool, error) {
	owned, err := slots.ParseSet(st.Owned)
	if err != nil {
		return false, err
	}
	return owned.IsEmpty(), nil
}
