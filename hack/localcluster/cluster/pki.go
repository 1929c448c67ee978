package cluster

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI file names under <state>/pki. The same names are used by the flags of the
// control-plane components, so keeping them in one place keeps the two in step.
const (
	caCert         = "ca.crt"
	caKey          = "ca.key"
	apiserverCert  = "apiserver.crt"
	apiserverKey   = "apiserver.key"
	adminCert      = "admin.crt"
	adminKey       = "admin.key"
	nodeCert       = "node.crt"
	nodeKey        = "node.key"
	saPublicKey    = "sa.pub"
	saPrivateKey   = "sa.key"
	certValidity   = 5 * 365 * 24 * time.Hour
	rsaKeyBits     = 2048
	clockSkewSlack = time.Hour
)

// ensurePKI creates the cluster's CA and every certificate and key the components
// need, unless they already exist: a restarted cluster must keep its CA, or every
// token and kubeconfig issued before would stop working.
func ensurePKI(dir, nodeName string) error {
	if _, err := os.Stat(filepath.Join(dir, saPublicKey)); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating pki dir: %w", err)
	}
	caKeyPair, err := rsa.GenerateKey(rand.Reader, rsaKeyBits)
	if err != nil {
		return fmt.Errorf("generating CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "annshard-localcluster-ca"},
		NotBefore:             now.Add(-clockSkewSlack),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKeyPair.PublicKey, caKeyPair)
	if err != nil {
		return fmt.Errorf("creating CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("parsing CA certificate: %w", err)
	}
	if err := writeCertAndKey(dir, caCert, caKey, caDER, caKeyPair); err != nil {
		return err
	}

	leaves := []struct {
		cert, key string
		tmpl      x509.Certificate
	}{
		{apiserverCert, apiserverKey, x509.Certificate{
			Subject:     pkix.Name{CommonName: "kube-apiserver"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
			DNSNames: []string{"localhost", "kubernetes", "kubernetes.default",
				"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		}},
		{adminCert, adminKey, x509.Certificate{
			Subject:     pkix.Name{CommonName: "kubernetes-admin", Organization: []string{"system:masters"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
		{nodeCert, nodeKey, x509.Certificate{
			Subject:     pkix.Name{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
	}
	for _, l := range leaves {
		key, err := rsa.GenerateKey(rand.Reader, rsaKeyBits)
		if err != nil {
			return fmt.Errorf("generating key for %s: %w", l.cert, err)
		}
		tmpl := l.tmpl
		tmpl.SerialNumber = serial()
		tmpl.NotBefore = now.Add(-clockSkewSlack)
		tmpl.NotAfter = now.Add(certValidity)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, &key.PublicKey, caKeyPair)
		if err != nil {
			return fmt.Errorf("creating %s: %w", l.cert, err)
		}
		if err := writeCertAndKey(dir, l.cert, l.key, der, key); err != nil {
			return err
		}
	}

	saKey, err := rsa.GenerateKey(rand.Reader, rsaKeyBits)
	if err != nil {
		return fmt.Errorf("generating service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return fmt.Errorf("encoding service-account public key: %w", err)
	}
	if err := writePEM(filepath.Join(dir, saPrivateKey), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey), 0o600); err != nil {
		return err
	}
	// Written last: its presence is what marks the PKI as complete.
	return writePEM(filepath.Join(dir, saPublicKey), "PUBLIC KEY", pub, 0o644)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		// crypto/rand never fails on Linux; a time-based serial is still unique enough here.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func writeCertAndKey(dir, certName, keyName string, der []byte, key *rsa.PrivateKey) error {
	if err := writePEM(filepath.Join(dir, keyName), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), 0o600); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, certName), "CERTIFICATE", der, 0o644)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// writeFileAtomic writes by temp file and rename so a reader never sees half a file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("renaming %s: %w", tmp, err), os.Remove(tmp))
	}
	return nil
}
