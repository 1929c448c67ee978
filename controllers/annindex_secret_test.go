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
	"bytes"
	"errors"
	"strings"
	"testing"
	"testing/iotest"

	corev1 "k8s.io/api/core/v1"
)

func TestMutateTokenSecret(t *testing.T) {
	seeded := func() *bytes.Reader { return bytes.NewReader(bytes.Repeat([]byte{0xab}, tokenBytes)) }
	tests := []struct {
		name      string
		data      map[string][]byte
		wantToken string
	}{
		{"new Secret gets a token", nil, strings.Repeat("ab", tokenBytes)},
		{"empty token is replaced", map[string][]byte{tokenKey: {}}, strings.Repeat("ab", tokenBytes)},
		{"existing token is kept", map[string][]byte{tokenKey: []byte("keep-me"), "other": []byte("x")}, "keep-me"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sec := &corev1.Secret{Data: tt.data}
			if err := mutateTokenSecret(testIndex(), sec, seeded()); err != nil {
				t.Fatal(err)
			}
			if got := string(sec.Data[tokenKey]); got != tt.wantToken {
				t.Fatalf("token = %q, want %q", got, tt.wantToken)
			}
			if sec.Labels[labelInstance] != "products" || sec.Labels[labelManagedBy] != managedBy {
				t.Fatalf("labels = %v", sec.Labels)
			}
			if tt.data["other"] != nil && string(sec.Data["other"]) != "x" {
				t.Fatal("an unrelated key was dropped")
			}
		})
	}
}

func TestMutateTokenSecretRandomFails(t *testing.T) {
	boom := errors.New("no entropy")
	err := mutateTokenSecret(testIndex(), &corev1.Secret{}, iotest.ErrReader(boom))
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want it to wrap %v", err, boom)
	}
}
