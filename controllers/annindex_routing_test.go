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
	"encoding/json"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/slots"
)

func TestMutateRoutingConfigMap(t *testing.T) {
	moved := slots.Even(3)
	moved.Move(slots.Range(0, 99), 2)
	movedJSON, err := json.Marshal(moved)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    map[string]string
		want    slots.Table
		wantErr error
	}{
		{"missing table of a new index is spread evenly at epoch 1", nil, slots.Even(4), nil},
		{"existing table is kept though spec.shards differs", map[string]string{slots.ConfigMapKey: string(movedJSON)}, moved, nil},
		{"unreadable table is an error, not overwritten", map[string]string{slots.ConfigMapKey: `{"epoch":0}`}, slots.Table{}, slots.ErrBadTable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cm := &corev1.ConfigMap{Data: tt.data}
			before := cm.Data[slots.ConfigMapKey]
			got, err := mutateRoutingConfigMap(testIndex(), cm)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if cm.Data[slots.ConfigMapKey] != before {
					t.Fatal("an unreadable table was overwritten")
				}
				return
			}
			if got != tt.want {
				t.Fatalf("table epoch %d shards %d, want epoch %d shards %d", got.Epoch, got.Shards, tt.want.Epoch, tt.want.Shards)
			}
			stored, err := slots.Parse([]byte(cm.Data[slots.ConfigMapKey]))
			if err != nil || stored != tt.want {
				t.Fatalf("stored table differs from the returned one (err %v)", err)
			}
			if cm.Labels[labelInstance] != "products" {
				t.Fatalf("labels = %v", cm.Labels)
			}
		})
	}
}

func TestInitialTable(t *testing.T) {
	shards := func(slotCounts ...int32) []annv1alpha1.ShardStatus {
		var out []annv1alpha1.ShardStatus
		for k, n := range slotCounts {
			out = append(out, annv1alpha1.ShardStatus{Shard: int32(k), Slots: n})
		}
		return out
	}
	tests := []struct {
		name    string
		epoch   int64
		status  []annv1alpha1.ShardStatus
		want    slots.Table
		wantErr error
	}{
		{"new index: spec.shards", 0, nil, slots.Even(4), nil},
		{"lost at epoch 1: the shards that owned slots, not a pending spec.shards", 1, shards(2048, 2048, 0), slots.Even(2), nil},
		{"lost at epoch 1 with no status to rebuild from", 1, nil, slots.Table{}, ErrRoutingTableLost},
		{"lost after a migration", 3, shards(1000, 3096), slots.Table{}, ErrRoutingTableLost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := testIndex() // spec.shards = 4
			idx.Status.RoutingEpoch, idx.Status.Shards = tt.epoch, tt.status
			got, err := initialTable(idx)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("table shards %d epoch %d, want shards %d epoch %d", got.Shards, got.Epoch, tt.want.Shards, tt.want.Epoch)
			}
		})
	}
}
