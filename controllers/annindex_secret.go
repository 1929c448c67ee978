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
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
)

// tokenBytes is the token's entropy: 256 bits, hex-encoded.
const tokenBytes = 32

// newToken returns a random bearer token read from rnd (crypto/rand in production).
func newToken(rnd io.Reader) (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := io.ReadFull(rnd, b); err != nil {
		return "", fmt.Errorf("generating token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// mutateTokenSecret makes sec the index's token Secret. An existing token is kept: the
// pods and every client hold it, so replacing it would lock them out. A new one is
// generated only when the key is missing or empty. Other keys and labels are left alone.
func mutateTokenSecret(idx *annv1alpha1.AnnIndex, sec *corev1.Secret, rnd io.Reader) error {
	if sec.Labels == nil {
		sec.Labels = map[string]string{}
	}
	for k, v := range componentLabels(idx, "token") {
		sec.Labels[k] = v
	}
	if len(sec.Data[tokenKey]) > 0 {
		return nil
	}
	tok, err := newToken(rnd)
	if err != nil {
		return err
	}
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[tokenKey] = []byte(tok)
	if sec.Type == "" {
		sec.Type = corev1.SecretTypeOpaque
	}
	return nil
}

// applySecret creates the token Secret once and keeps its labels and owner; see
// mutateTokenSecret for why the token itself is never replaced.
func (r *AnnIndexReconciler) applySecret(ctx context.Context, s *scope) (ctrl.Result, error) {
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: tokenSecretName(s.index), Namespace: s.index.Namespace}}
	res, err := r.createOrUpdate(ctx, sec, func() error {
		if err := mutateTokenSecret(s.index, sec, rand.Reader); err != nil {
			return err
		}
		return controllerutil.SetControllerReference(s.index, sec, r.Scheme)
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("reconciling token Secret %s: %w", sec.Name, err)
	}
	if res == controllerutil.OperationResultCreated {
		log.FromContext(ctx).Info("Created token Secret", "secret", sec.Name)
	}
	return ctrl.Result{}, nil
}
