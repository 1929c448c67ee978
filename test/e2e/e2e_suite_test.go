// Package e2e is annshard's end-to-end suite. It runs against any kubeconfig: the local
// cluster (`make test-e2e`) or kind (`make test-e2e-kind`). It installs the operator with
// the Helm chart, creates indexes and drives data through the routers.
//
// Environment:
//
//	KUBECONFIG          the cluster (required)
//	E2E_HELM            helm binary (default: helm on PATH)
//	E2E_CHART           chart directory (default: ../../charts/annshard)
//	E2E_OPERATOR_IMAGE  operator image, repository:tag (default annshard/annshard-operator:dev)
//	E2E_SHARD_IMAGE     shard server image (default annshard/shardserver:dev)
//	E2E_SKIP_INSTALL    "true": the operator is already installed
//	E2E_LOG_DIR         where container logs are when the apiserver cannot serve them
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/annshard/annshard/test/e2e/framework"
)

const (
	releaseName      = "annshard"
	releaseNamespace = "annshard-system"
)

var (
	cluster    *framework.Cluster
	namespace  string
	shardImage string
)

func TestE2E(t *testing.T) {
	if os.Getenv("KUBECONFIG") == "" {
		t.Skip("KUBECONFIG is not set: the e2e suite needs a cluster (run `make test-e2e`)")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "annshard e2e")
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	cluster, err = framework.Connect("")
	Expect(err).NotTo(HaveOccurred())
	cluster.LogDir = os.Getenv("E2E_LOG_DIR")
	shardImage = env("E2E_SHARD_IMAGE", "annshard/shardserver:dev")

	if os.Getenv("E2E_SKIP_INSTALL") != "true" {
		By("installing the operator with the Helm chart")
		repo, tag, _ := strings.Cut(env("E2E_OPERATOR_IMAGE", "annshard/annshard-operator:dev"), ":")
		cmd := exec.CommandContext(ctx, env("E2E_HELM", "helm"), "upgrade", "--install", releaseName,
			env("E2E_CHART", "../../charts/annshard"), "--namespace", releaseNamespace, "--create-namespace",
			"--set", "image.repository="+repo, "--set", "image.tag="+tag, "--set", "logLevel=debug",
			"--wait", "--timeout", "3m")
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "helm install:\n%s", out)
	}

	namespace = "e2e-" + rand.String(5)
	Expect(cluster.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})).To(Succeed())
	Eventually(func(g Gomega) {
		var sa corev1.ServiceAccount
		g.Expect(cluster.Client.Get(ctx, objKey(namespace, "default"), &sa)).To(Succeed())
	}).WithTimeout(time.Minute).Should(Succeed(), "the default ServiceAccount of %s never appeared", namespace)
}, NodeTimeout(5*time.Minute))

var _ = AfterSuite(func(ctx SpecContext) {
	// A failed run keeps its namespace for a look (on kind; the local cluster goes anyway).
	if cluster != nil && namespace != "" && !suiteFailed {
		_ = cluster.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})
	}
}, NodeTimeout(time.Minute))

// suiteFailed is set by the first failed spec.
var suiteFailed bool

// On failure, print what a person debugging it would look at first: the events, and each
// pod's state and the tail of its log, in the test and operator namespaces.
var _ = ReportAfterEach(func(ctx SpecContext, report SpecReport) {
	if !report.Failed() || cluster == nil {
		return
	}
	suiteFailed = true
	var b strings.Builder
	for _, ns := range []string{namespace, releaseNamespace} {
		fmt.Fprintf(&b, "===== events in %s\n%s", ns, cluster.Events(ctx, ns))
		var pods corev1.PodList
		if err := cluster.Client.List(ctx, &pods, inNamespace(ns)); err == nil {
			for i := range pods.Items {
				p := &pods.Items[i]
				fmt.Fprintf(&b, "===== pod %s phase=%s ip=%s ready=%v\n", p.Name, p.Status.Phase, p.Status.PodIP, framework.PodReady(p))
				b.WriteString(cluster.PodLogs(ctx, p, 40))
			}
		}
	}
	AddReportEntry("cluster state at failure", b.String())
	GinkgoWriter.Println(b.String())
})
