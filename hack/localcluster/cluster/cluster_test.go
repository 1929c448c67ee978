package cluster

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	if err := ensurePKI(dir, "local"); err != nil {
		t.Fatal(err)
	}
	load := func(name string) *x509.Certificate {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca := load(caCert)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, tc := range []struct {
		file   string
		usage  x509.ExtKeyUsage
		cn     string
		org    string
		verify string // DNS name or IP the cert must be valid for
	}{
		{apiserverCert, x509.ExtKeyUsageServerAuth, "kube-apiserver", "", "127.0.0.1"},
		{apiserverCert, x509.ExtKeyUsageServerAuth, "kube-apiserver", "", "kubernetes.default.svc.cluster.local"},
		{apiserverCert, x509.ExtKeyUsageServerAuth, "kube-apiserver", "", "10.0.0.1"},
		{adminCert, x509.ExtKeyUsageClientAuth, "kubernetes-admin", "system:masters", ""},
		{nodeCert, x509.ExtKeyUsageClientAuth, "system:node:local", "system:nodes", ""},
	} {
		t.Run(tc.file+" "+tc.verify, func(t *testing.T) {
			c := load(tc.file)
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.verify, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
				t.Errorf("verify: %v", err)
			}
			if c.Subject.CommonName != tc.cn || (tc.org != "" && !slices.Contains(c.Subject.Organization, tc.org)) {
				t.Errorf("subject %v, want CN=%s O=%s", c.Subject, tc.cn, tc.org)
			}
		})
	}
	before, _ := os.ReadFile(filepath.Join(dir, caCert))
	if err := ensurePKI(dir, "local"); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, caCert)); string(after) != string(before) {
		t.Error("a second ensurePKI replaced the CA")
	}
}

func TestPIDFiles(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	path := filepath.Join(dir, "sleep.pid")
	if err := WritePIDFile(path, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		content string // empty: keep the file as written
		wantOK  bool
	}{
		{"live process", "", true},
		{"reused pid (start time differs)", "PID 1\n", false},
		{"garbage", "not a pid\n", false},
		{"missing", "-", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := path
			switch tc.content {
			case "":
			case "-":
				p = filepath.Join(dir, "missing.pid")
			default:
				p = filepath.Join(dir, "other.pid")
				content := tc.content
				if content == "PID 1\n" {
					content = strconv.Itoa(cmd.Process.Pid) + " 1\n"
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if pid, ok := ReadPIDFile(p); ok != tc.wantOK || (ok && pid != cmd.Process.Pid) {
				t.Errorf("ReadPIDFile = %d, %v; want %d, %v", pid, ok, cmd.Process.Pid, tc.wantOK)
			}
		})
	}
	t.Run("stop", func(t *testing.T) {
		killed, err := StopPID(cmd.Process.Pid, 5*time.Second)
		if err != nil || killed {
			t.Fatalf("StopPID: killed=%v err=%v; sleep should exit on SIGTERM", killed, err)
		}
		if _, ok := ReadPIDFile(path); ok {
			t.Error("stopped process still reported alive")
		}
	})
}
