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

// Package v1alpha1 is the annshard.io/v1alpha1 API: the AnnIndex resource a user writes to
// run one sharded, replicated HNSW index, its status, and the condition types and reasons
// the operator reports.
//
// Validation lives in the generated CRD (OpenAPI bounds, enums and CEL rules), so the API
// needs no webhook. The types are plain data: safe to read concurrently, not to mutate
// concurrently; copy them with the generated DeepCopy methods.
//
// +kubebuilder:object:generate=true
// +groupName=annshard.io
package v1alpha1
