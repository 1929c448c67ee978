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
	"os"
	"path/filepath"
	"strconv"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// TestSchemaDefaultsMatchBuilders keeps the fallbacks the builders use for objects that
// never went through the API server equal to the CRD's defaults.
func TestSchemaDefaultsMatchBuilders(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "config", "crd", "bases", "annshard.io_annindexes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	tests := []struct {
		path []string
		want string // JSON
	}{
		{[]string{"router", "hedgeAfterPercentile"}, strconv.Itoa(defaultHedgeAfterPercentile)},
		{[]string{"router", "cacheEntries"}, strconv.Itoa(defaultCacheEntries)},
		{[]string{"shardServer", "storage", "size"}, `"` + defaultStorageSize.String() + `"`},
	}
	for _, tt := range tests {
		t.Run(filepath.Join(tt.path...), func(t *testing.T) {
			p := spec
			for _, name := range tt.path {
				next, ok := p.Properties[name]
				if !ok {
					t.Fatalf("schema has no %s", name)
				}
				p = next
			}
			if p.Default == nil {
				t.Fatal("no default in the schema")
			}
			if got := string(p.Default.Raw); got != tt.want {
				t.Fatalf("schema default %s, builders assume %s", got, tt.want)
			}
		})
	}
}
