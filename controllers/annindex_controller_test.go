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
	"slices"
	"testing"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
)

func TestLowestNonZeroResult(t *testing.T) {
	after := func(d time.Duration) ctrl.Result { return ctrl.Result{RequeueAfter: d} }
	tests := []struct {
		name string
		a, b ctrl.Result
		want ctrl.Result
	}{
		{"both zero", ctrl.Result{}, ctrl.Result{}, ctrl.Result{}},
		{"zero then wait", ctrl.Result{}, after(time.Second), after(time.Second)},
		{"wait then zero", after(time.Second), ctrl.Result{}, after(time.Second)},
		{"the shorter wait wins", after(5 * time.Second), after(time.Second), after(time.Second)},
		{"in either order", after(time.Second), after(5 * time.Second), after(time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lowestNonZeroResult(tt.a, tt.b); got != tt.want {
				t.Fatalf("lowestNonZeroResult(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

// TestRunPhases checks that phases run in order, stop at the first error, and that the
// merged result keeps the shortest wait asked for, also from the failing phase.
func TestRunPhases(t *testing.T) {
	var ran []string
	p := func(name string, res ctrl.Result, err error) phase {
		return func(context.Context, *scope) (ctrl.Result, error) {
			ran = append(ran, name)
			return res, err
		}
	}
	boom := errors.New("boom")
	res, err := runPhases(context.Background(), newScope(testIndex()),
		p("observe", ctrl.Result{}, nil),
		p("decide", ctrl.Result{RequeueAfter: 3 * time.Second}, nil),
		p("apply", ctrl.Result{RequeueAfter: time.Second}, boom),
		p("never", ctrl.Result{RequeueAfter: time.Millisecond}, nil),
	)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if res.RequeueAfter != time.Second {
		t.Fatalf("RequeueAfter = %v, want 1s", res.RequeueAfter)
	}
	if want := []string{"observe", "decide", "apply"}; !slices.Equal(ran, want) {
		t.Fatalf("ran %v, want %v", ran, want)
	}
}
