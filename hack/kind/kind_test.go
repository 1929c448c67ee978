// Package kind_test checks that the pieces of the kind node image agree with each other:
// the cluster config, the node's static CNI config and the storage manifest all name things
// that node-image.sh builds under other names or versions, and a mismatch would only show
// as a cluster that never becomes ready.
package kind_test

import (
	"encoding/json"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// clusterConfig is the part of kind's v1alpha4 Cluster that the node image depends on.
type clusterConfig struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Nodes      []any  `json:"nodes"`
	Networking struct {
		DisableDefaultCNI bool   `json:"disableDefaultCNI"`
		PodSubnet         string `json:"podSubnet"`
		ServiceSubnet     string `json:"serviceSubnet"`
		KubeProxyMode     string `json:"kubeProxyMode"`
	} `json:"networking"`
	KubeadmConfigPatches []string `json:"kubeadmConfigPatches"`
}

type conflist struct {
	CNIVersion string `json:"cniVersion"`
	Plugins    []struct {
		Type string `json:"type"`
		IPAM struct {
			Type   string `json:"type"`
			Ranges [][]struct {
				Subnet string `json:"subnet"`
			} `json:"ranges"`
		} `json:"ipam"`
	} `json:"plugins"`
}

func TestClusterConfigMatchesNodeImage(t *testing.T) {
	var c clusterConfig
	if err := yaml.UnmarshalStrict(read(t, "cluster.yaml"), &c); err != nil {
		t.Fatalf("cluster.yaml: %v", err)
	}
	if c.Kind != "Cluster" || c.APIVersion != "kind.x-k8s.io/v1alpha4" {
		t.Errorf("cluster.yaml is %s %s, want kind.x-k8s.io/v1alpha4 Cluster", c.APIVersion, c.Kind)
	}
	// The static CNI config serves exactly one node, and kindnetd is not in the image.
	if len(c.Nodes) > 1 || !c.Networking.DisableDefaultCNI {
		t.Errorf("cluster.yaml: %d nodes, disableDefaultCNI=%v; the node image serves one node with its own CNI config",
			len(c.Nodes), c.Networking.DisableDefaultCNI)
	}
	// kube-proxy's image carries nft, not iptables.
	if c.Networking.KubeProxyMode != "nftables" {
		t.Errorf("kubeProxyMode = %q, want nftables", c.Networking.KubeProxyMode)
	}
	patches := strings.Join(c.KubeadmConfigPatches, "\n")
	for _, want := range []string{"imageTag: ETCD_TAG", "failCgroupV1: false"} {
		if !strings.Contains(patches, want) {
			t.Errorf("kubeadmConfigPatches lack %q", want)
		}
	}

	var cni conflist
	if err := json.Unmarshal(read(t, "node/etc/cni/net.d/10-annshard-ptp.conflist"), &cni); err != nil {
		t.Fatalf("CNI config: %v", err)
	}
	if len(cni.Plugins) == 0 || cni.Plugins[0].Type != "ptp" || len(cni.Plugins[0].IPAM.Ranges) != 1 ||
		len(cni.Plugins[0].IPAM.Ranges[0]) != 1 {
		t.Fatalf("CNI config: want ptp with one host-local range first, got %+v", cni)
	}
	podSubnet := netip.MustParsePrefix(c.Networking.PodSubnet)
	nodeRange := netip.MustParsePrefix(cni.Plugins[0].IPAM.Ranges[0][0].Subnet)
	// The controller manager gives the first node the first /24 of the pod subnet.
	first := netip.PrefixFrom(podSubnet.Addr(), 24)
	if nodeRange != first {
		t.Errorf("CNI range %s is not the first node's podCIDR %s (podSubnet %s)", nodeRange, first, podSubnet)
	}
}

func TestStorageManifestNamesBuiltImages(t *testing.T) {
	gomod := string(read(t, "../tools/localpath/go.mod"))
	m := regexp.MustCompile(`github.com/rancher/local-path-provisioner (v\S+)`).FindStringSubmatch(gomod)
	if m == nil {
		t.Fatal("hack/tools/localpath/go.mod does not pin local-path-provisioner")
	}
	manifest := string(read(t, "node/kind/manifests/default-storage.yaml"))
	script := string(read(t, "node-image.sh"))
	images := regexp.MustCompile(`image: (\S+)`).FindAllStringSubmatch(manifest, -1)
	if len(images) != 2 {
		t.Fatalf("want the provisioner and helper images in the manifest, found %v", images)
	}
	want := map[string]bool{"docker.io/annshard/local-path-provisioner:" + m[1]: true}
	helper := regexp.MustCompile(`-tag "(docker.io/annshard/local-path-helper:[^"$]+)"`).FindStringSubmatch(script)
	if helper == nil {
		t.Fatal("node-image.sh does not build the local-path helper image")
	}
	want[helper[1]] = true
	for _, img := range images {
		if !want[img[1]] {
			t.Errorf("the storage manifest names %s, which node-image.sh does not build (it builds %v)", img[1], want)
		}
	}
	if !strings.Contains(manifest, "- --helper-image\n            - "+helper[1]) {
		t.Errorf("the provisioner's --helper-image is not %s", helper[1])
	}
}
