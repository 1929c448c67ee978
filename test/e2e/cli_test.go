package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/test/dashboards"
	"github.com/annshard/annshard/test/e2e/framework"
)

// The kubectl plugin against a real index: one file of each format imported, counted in
// status, found by search; an interrupted import resumed without duplicates; top; and the
// chart's Grafana dashboard checked against the metrics the pods really export.
var _ = Describe("kubectl annshard", Ordered, Label("cli"), func() {
	const name = "cli"
	const dim = 16
	var (
		plugin string
		dir    string
		total  int // vectors imported so far
		parq   [][]float32
	)

	// run executes the plugin in the test namespace and returns its output and exit code.
	run := func(ctx context.Context, args ...string) (string, int) {
		cmd := exec.CommandContext(ctx, plugin, append(args, "-n", namespace)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if err != nil {
			ee, ok := err.(*exec.ExitError)
			Expect(ok).To(BeTrue(), "running %v: %v", args, err)
			code = ee.ExitCode()
		}
		GinkgoWriter.Printf("$ kubectl annshard %s\n%s(exit %d)\n", strings.Join(args, " "), out, code)
		return string(out), code
	}
	statusVectors := func(ctx context.Context) int64 {
		out, code := run(ctx, "status", name, "-o", "json")
		Expect(code).To(Equal(0))
		var st struct {
			Vectors int64 `json:"vectors"`
		}
		Expect(json.Unmarshal([]byte(out), &st)).To(Succeed())
		return st.Vectors
	}

	BeforeAll(func(ctx SpecContext) {
		plugin = os.Getenv("E2E_PLUGIN")
		if plugin == "" {
			plugin = filepath.Join(GinkgoT().TempDir(), "kubectl-annshard")
			out, err := exec.CommandContext(ctx, "go", "build", "-o", plugin, "../../cmd/kubectl-annshard").CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "building the plugin:\n%s", out)
		}
		dir = GinkgoT().TempDir()

		By("creating a 2 shards x 1 replica index")
		idx := newIndex(name, dim)
		idx.Spec.Replicas = annv1alpha1.ReplicaRange{Min: 1, Max: 1}
		Expect(cluster.Client.Create(ctx, idx)).To(Succeed())
		_, err := cluster.WaitHealthy(ctx, objKey(namespace, name), availableTimeout, nil)
		Expect(err).NotTo(HaveOccurred())
	}, NodeTimeout(availableTimeout+3*time.Minute))

	It("imports a file of each format and shows the count in status", func(ctx SpecContext) {
		data := framework.Generate(900, 0, dim, 8, 0, 11).Vectors
		files := map[string]int{}
		write := func(name string, b []byte) string {
			p := filepath.Join(dir, name)
			Expect(os.WriteFile(p, b, 0o644)).To(Succeed())
			return p
		}
		var fv, bv, npy, jl bytes.Buffer
		for _, v := range data[:200] {
			_ = binary.Write(&fv, binary.LittleEndian, int32(dim))
			_ = binary.Write(&fv, binary.LittleEndian, v)
		}
		files[write("a.fvecs", fv.Bytes())] = 200
		for i := range 100 {
			_ = binary.Write(&bv, binary.LittleEndian, int32(dim))
			for j := range dim {
				bv.WriteByte(byte((i*7 + j*13) % 256))
			}
		}
		files[write("b.bvecs", bv.Bytes())] = 100
		// float64, so that the conversion path is the one exercised.
		hdr := fmt.Sprintf("{'descr': '<f8', 'fortran_order': False, 'shape': (200, %d), }", dim)
		hdr += strings.Repeat(" ", 63-(10+len(hdr))%64) + "\n"
		npy.WriteString("\x93NUMPY\x01\x00")
		_ = binary.Write(&npy, binary.LittleEndian, uint16(len(hdr)))
		npy.WriteString(hdr)
		for _, v := range data[200:400] {
			for _, x := range v {
				_ = binary.Write(&npy, binary.LittleEndian, float64(x))
			}
		}
		files[write("c.npy", npy.Bytes())] = 200
		for i, v := range data[400:600] {
			line, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("j%d", i), "vector": v, "partition": fmt.Sprintf("p%d", i%3)})
			jl.Write(append(line, '\n'))
		}
		files[write("d.jsonl", jl.Bytes())] = 200
		type row struct {
			ID  string    `parquet:"id"`
			Emb []float32 `parquet:"emb,list"`
		}
		var rows []row
		parq = data[600:900]
		for i, v := range parq {
			rows = append(rows, row{ID: fmt.Sprintf("pq%d", i), Emb: v})
		}
		var pb bytes.Buffer
		pw := parquet.NewGenericWriter[row](&pb, parquet.MaxRowsPerRowGroup(128))
		_, err := pw.Write(rows)
		Expect(err).NotTo(HaveOccurred())
		Expect(pw.Close()).To(Succeed())
		files[write("e.parquet", pb.Bytes())] = 300

		for path, n := range files {
			prefix := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)) + "-"
			out, code := run(ctx, "import", name, path, "--id-prefix", prefix, "-v")
			Expect(code).To(Equal(0), out)
			Expect(out).To(ContainSubstring(fmt.Sprintf("Imported %d vectors into %s", n, name)))
			Expect(out).To(ContainSubstring("Rejected 0 rows."))
			// The local cluster's pod IPs are loopback: the API server cannot proxy there.
			Expect(out).To(ContainSubstring("reaching the routers at their pod IPs directly"))
			total += n
		}

		By("a file of another dimension is refused, nothing written")
		bad := filepath.Join(dir, "bad.fvecs")
		var b bytes.Buffer
		_ = binary.Write(&b, binary.LittleEndian, int32(3))
		_ = binary.Write(&b, binary.LittleEndian, []float32{1, 2, 3})
		Expect(os.WriteFile(bad, b.Bytes(), 0o644)).To(Succeed())
		out, code := run(ctx, "import", name, bad)
		Expect(code).To(Equal(3), out)
		Expect(out).To(ContainSubstring("vectors of dimension 3, index cli has dimension 16"))

		By("status counts every vector")
		Eventually(func() int64 { return statusVectors(ctx) }).WithContext(ctx).WithTimeout(time.Minute).
			WithPolling(2 * time.Second).Should(BeEquivalentTo(total))
		out, code = run(ctx, "status", name)
		Expect(code).To(Equal(0))
		Expect(out).To(MatchRegexp(`Available\s+True`))
		Expect(out).To(MatchRegexp(`(?m)^0\s+1/1\s+\d+\s+\d+`))
		Expect(out).To(ContainSubstring("No slot migrations in flight."))
	})

	It("finds an imported vector with search", func(ctx SpecContext) {
		out, code := run(ctx, "search", name, "--id", "j7", "--partition", "p1", "-k", "3", "-o", "json")
		Expect(code).To(Equal(0), out)
		var res struct {
			Results []struct {
				ID       string  `json:"id"`
				Distance float32 `json:"distance"`
			} `json:"results"`
		}
		Expect(json.Unmarshal([]byte(out), &res)).To(Succeed())
		Expect(res.Results).NotTo(BeEmpty())
		Expect(res.Results[0].ID).To(Equal("j7"))
		Expect(res.Results[0].Distance).To(BeNumerically("<", 1e-4))

		// The parquet file's row 5 as a query finds its own id first.
		out, code = run(ctx, "search", name, "--file", filepath.Join(dir, "e.parquet"), "--rows", "5", "-k", "2")
		Expect(code).To(Equal(0), out)
		Expect(out).To(MatchRegexp(`(?m)^1\s+pq5\s+0\s`))

		vec := make([]string, dim)
		for i, x := range parq[9] {
			vec[i] = fmt.Sprint(x)
		}
		out, code = run(ctx, "search", name, "--vector", strings.Join(vec, ","), "-k", "1")
		Expect(code).To(Equal(0), out)
		Expect(out).To(MatchRegexp(`(?m)^1\s+pq9\s`))

		out, code = run(ctx, "search", name, "--id", "no-such-id")
		Expect(code).To(Equal(4), out)
	})

	It("resumes an interrupted import without duplicates", func(ctx SpecContext) {
		const n, batch = 20000, 50
		data := framework.Generate(n, 0, dim, 8, 0, 12).Vectors
		var fv bytes.Buffer
		for _, v := range data {
			_ = binary.Write(&fv, binary.LittleEndian, int32(dim))
			_ = binary.Write(&fv, binary.LittleEndian, v)
		}
		path := filepath.Join(dir, "big.fvecs")
		Expect(os.WriteFile(path, fv.Bytes(), 0o644)).To(Succeed())
		cp := filepath.Join(dir, "cp.json")
		args := []string{"import", name, path, "--id-prefix", "r", "--batch-size", fmt.Sprint(batch),
			"--concurrency", "1", "--checkpoint", cp, "-n", namespace}

		By("interrupting the import once some batches are acknowledged")
		cmd := exec.CommandContext(ctx, plugin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		Expect(cmd.Start()).To(Succeed())
		Eventually(func() string {
			raw, _ := os.ReadFile(cp)
			return string(raw)
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(20 * time.Millisecond).Should(MatchRegexp(`"acked": "0[-"]`))
		Expect(cmd.Process.Signal(syscall.SIGINT)).To(Succeed())
		err := cmd.Wait()
		GinkgoWriter.Printf("interrupted import:\n%s\n", out.String())
		var ee *exec.ExitError
		Expect(err).To(BeAssignableToTypeOf(ee))
		Expect(err.(*exec.ExitError).ExitCode()).To(Equal(5))
		Expect(out.String()).To(ContainSubstring("--resume"))
		var saved struct {
			Files []struct {
				Acked string `json:"acked"`
			} `json:"files"`
		}
		raw, err := os.ReadFile(cp)
		Expect(err).NotTo(HaveOccurred())
		Expect(json.Unmarshal(raw, &saved)).To(Succeed())
		acked := ackedCount(saved.Files[0].Acked)
		Expect(acked).To(BeNumerically(">", 0))
		Expect(acked).To(BeNumerically("<", n/batch), "the import finished before it was interrupted")

		By("resuming: only the batches not acknowledged are sent")
		res, code := run(ctx, append(args[:len(args)-2], "--resume")...)
		Expect(code).To(Equal(0), res)
		Expect(res).To(ContainSubstring(fmt.Sprintf("Skipped %d batches", acked)))
		Expect(res).To(ContainSubstring(fmt.Sprintf("Imported %d vectors", n-acked*batch)))
		total += n
		Eventually(func() int64 { return statusVectors(ctx) }).WithContext(ctx).WithTimeout(time.Minute).
			WithPolling(2 * time.Second).Should(BeEquivalentTo(total))
		// A vector of the first batch, sent only before the interruption, is there.
		res, code = run(ctx, "search", name, "--id", "r0", "-k", "1")
		Expect(code).To(Equal(0), res)
		Expect(res).To(MatchRegexp(`(?m)^1\s+r0\s+0\s`))
	})

	It("shows every pod in top", func(ctx SpecContext) {
		out, code := run(ctx, "top", name, "--interval", "500ms", "-o", "json")
		Expect(code).To(Equal(0), out)
		var rows []struct {
			Pod     string `json:"pod"`
			Role    string `json:"role"`
			Error   string `json:"error"`
			Vectors *int   `json:"vectors"`
		}
		Expect(json.Unmarshal([]byte(out), &rows)).To(Succeed())
		roles := map[string]int{}
		for _, r := range rows {
			Expect(r.Error).To(BeEmpty(), "pod %s", r.Pod)
			roles[r.Role]++
		}
		Expect(roles).To(Equal(map[string]int{"primary": 2, "router": 1}))
	})

	It("has every metric the chart's Grafana dashboard queries", func(ctx SpecContext) {
		targets, err := dashboards.Load("../../charts/annshard/dashboards/annindex.json")
		Expect(err).NotTo(HaveOccurred())
		exported := map[string]bool{}
		scrape := func(p *corev1.Pod, port int) {
			url := fmt.Sprintf("http://%s:%d/metrics", p.Status.PodIP, port)
			resp, err := http.Get(url)
			Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			Expect(resp.StatusCode).To(Equal(http.StatusOK), "%s: %s", url, body)
			parser := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
			Expect(err).NotTo(HaveOccurred())
			for name, f := range fams {
				for _, s := range dashboards.Exposed(name, f.GetType().String()) {
					exported[s] = true
				}
			}
		}
		for _, component := range []string{"shard", "router"} {
			pods, err := cluster.Pods(ctx, namespace, name, component, -1, true)
			Expect(err).NotTo(HaveOccurred())
			Expect(pods).NotTo(BeEmpty())
			scrape(&pods[0], framework.Port)
		}
		scrape(&operatorPods(ctx)[0], 8080)
		Expect(dashboards.Missing(targets, exported)).To(BeEmpty(), "panels use metrics no component exports")
	})
})

// ackedCount counts the batches in a checkpoint's "0-12,14" ranges.
func ackedCount(s string) int {
	n := 0
	for part := range strings.SplitSeq(s, ",") {
		var lo, hi int
		if c, _ := fmt.Sscanf(part, "%d-%d", &lo, &hi); c == 2 {
			n += hi - lo + 1
		} else if c == 1 {
			n++
		}
	}
	return n
}
