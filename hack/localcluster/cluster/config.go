package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Config is everything a cluster needs to know about itself. `up` writes it to
// <state>/cluster.json so that `down`, `status`, `logs` and the node agent (a separate,
// detached process) all agree on the ports, paths and image mappings of the cluster
// they act on.
type Config struct {
	// Root is the repository root; images map to binaries under Root/bin by default.
	Root string `json:"root"`
	// StateDir holds everything the cluster writes: PKI, etcd data, logs, pods, PVs.
	StateDir string `json:"stateDir"`
	// K8sBinDir holds etcd, kube-apiserver, kube-controller-manager and kube-scheduler.
	K8sBinDir string `json:"k8sBinDir"`
	// NodeName is the name of the one Node the agent registers.
	NodeName string `json:"nodeName"`
	// EtcdPort is etcd's client port; the peer and metrics ports are EtcdPort+10 and +20.
	EtcdPort              int `json:"etcdPort"`
	APIServerPort         int `json:"apiServerPort"`
	ControllerManagerPort int `json:"controllerManagerPort"`
	SchedulerPort         int `json:"schedulerPort"`
	// PodCIDR is the loopback range pod IPs are taken from; it must lie in 127.0.0.0/8.
	PodCIDR string `json:"podCIDR"`
	// Images maps an image repository's last path element (tag stripped) to a binary.
	Images map[string]string `json:"images"`
}

// Defaults are non-default ports for every component, so the local cluster does not
// collide with envtest (random ports) or a real control plane on the same machine.
func Defaults(root string) Config {
	return Config{
		Root:                  root,
		StateDir:              filepath.Join(root, ".local"),
		K8sBinDir:             filepath.Join(root, "bin", "k8s", "v1.36.3"),
		NodeName:              "local",
		EtcdPort:              23790,
		APIServerPort:         16443,
		ControllerManagerPort: 10357,
		SchedulerPort:         10359,
		PodCIDR:               "127.0.16.0/20",
		Images: map[string]string{
			"shardserver":       filepath.Join(root, "bin", "shardserver"),
			"annshard-operator": filepath.Join(root, "bin", "manager"),
			"manager":           filepath.Join(root, "bin", "manager"),
			// IMG of hack/make/operator.mk and the kubebuilder default in config/manager.
			"operator":   filepath.Join(root, "bin", "manager"),
			"controller": filepath.Join(root, "bin", "manager"),
		},
	}
}

// Paths inside the state directory, one function each so no caller builds them by hand.
func (c Config) PKIDir() string         { return filepath.Join(c.StateDir, "pki") }
func (c Config) Kubeconfig() string     { return filepath.Join(c.StateDir, "kubeconfig") }
func (c Config) NodeKubeconfig() string { return filepath.Join(c.StateDir, "node.kubeconfig") }
func (c Config) LogDir() string         { return filepath.Join(c.StateDir, "logs") }
func (c Config) PodLogDir() string      { return filepath.Join(c.StateDir, "logs", "pods") }
func (c Config) PIDDir() string         { return filepath.Join(c.StateDir, "pids") }
func (c Config) PodPIDDir() string      { return filepath.Join(c.StateDir, "pids", "pods") }
func (c Config) PodsDir() string        { return filepath.Join(c.StateDir, "pods") }
func (c Config) PVDir() string          { return filepath.Join(c.StateDir, "pv") }
func (c Config) CACert() string         { return filepath.Join(c.PKIDir(), caCert) }
func (c Config) configFile() string     { return filepath.Join(c.StateDir, "cluster.json") }
func (c Config) APIServerURL() string   { return fmt.Sprintf("https://127.0.0.1:%d", c.APIServerPort) }

func (c Config) etcdPeerPort() int    { return c.EtcdPort + 10 }
func (c Config) etcdMetricsPort() int { return c.EtcdPort + 20 }

// PodLogPath is where the agent writes a container's stdout and stderr.
func (c Config) PodLogPath(namespace, pod, container string) string {
	return filepath.Join(c.PodLogDir(), fmt.Sprintf("%s_%s_%s.log", namespace, pod, container))
}

// ErrNoCluster is returned by Load when the state directory holds no cluster.
var ErrNoCluster = errors.New("no local cluster in this state directory (run `localcluster up`)")

// Load reads the configuration `up` saved in stateDir.
func Load(stateDir string) (Config, error) {
	var c Config
	data, err := os.ReadFile(Config{StateDir: stateDir}.configFile())
	if errors.Is(err, os.ErrNotExist) {
		return c, fmt.Errorf("%s: %w", stateDir, ErrNoCluster)
	}
	if err != nil {
		return c, fmt.Errorf("reading cluster config: %w", err)
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("parsing cluster config: %w", err)
	}
	return c, nil
}

func (c Config) save() error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding cluster config: %w", err)
	}
	return writeFileAtomic(c.configFile(), append(data, '\n'), 0o644)
}
