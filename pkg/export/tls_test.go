package export

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/chtest"
	"github.com/cilium-tracer/tracer/internal/otlptest"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, all written as PEM files.
type testPKI struct {
	dir           string
	caPool        *x509.CertPool
	server        tls.Certificate
	ca, cert, key string // files
	caCert        *x509.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.caCert, _ = x509.ParseCertificate(caDER)
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(p.caCert)

	issue := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	write := func(name, typ string, der []byte) string {
		f := filepath.Join(p.dir, name)
		if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	srvDER, srvKey := issue(2, x509.ExtKeyUsageServerAuth)
	p.server = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	cliDER, cliKey := issue(3, x509.ExtKeyUsageClientAuth)
	keyDER, _ := x509.MarshalECPrivateKey(cliKey)
	p.ca = write("ca.pem", "CERTIFICATE", caDER)
	p.cert = write("client.pem", "CERTIFICATE", cliDER)
	p.key = write("client-key.pem", "EC PRIVATE KEY", keyDER)
	return p
}

// TestClickHouseTLS connects with mutual TLS, and fails without the client
// certificate.
func TestClickHouseTLS(t *testing.T) {
	pki := newTestPKI(t)
	srv := chtest.NewTLS(t, 25, 8, &tls.Config{
		Certificates: []tls.Certificate{pki.server},
		ClientCAs:    pki.caPool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	ctx := context.Background()
	spans := testSpans()

	cfg, err := TLSFiles{CA: pki.ca, Cert: pki.cert, Key: pki.key}.Config()
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewClickHouseExporter(ClickHouseConfig{Addrs: []string{srv.Addr()}, TLS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(ctx)
	if err := e.Export(ctx, spans); err != nil {
		t.Fatal(err)
	}
	if n := srv.RowCount(); n != len(spans) {
		t.Errorf("%d rows over TLS, want %d", n, len(spans))
	}

	noCert, err := TLSFiles{CA: pki.ca}.Config()
	if err != nil {
		t.Fatal(err)
	}
	e2, err := NewClickHouseExporter(ClickHouseConfig{Addrs: []string{srv.Addr()}, TLS: noCert, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Shutdown(ctx)
	if err := e2.Export(ctx, spans); err == nil {
		t.Error("export without a client certificate succeeded")
	}
}

func TestOTLPHTTPTLS(t *testing.T) {
	recv := otlptest.NewHTTPTLS(t)
	pool := x509.NewCertPool()
	pool.AddCert(recv.Certificate())
	ctx := context.Background()
	e, err := NewOTLPExporter(ctx, OTLPConfig{
		HTTP:     true,
		Endpoint: recv.Addr(),
		TLS:      &tls.Config{RootCAs: pool},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Export(ctx, testSpans()); err != nil {
		t.Fatal(err)
	}
	e.Shutdown(ctx)
	if n := len(recv.Requests()); n != 1 {
		t.Errorf("%d requests over TLS", n)
	}
}

func TestTLSFilesErrors(t *testing.T) {
	pki := newTestPKI(t)
	for name, f := range map[string]TLSFiles{
		"missing ca":   {CA: pki.ca + ".missing"},
		"cert alone":   {Cert: pki.cert},
		"key mismatch": {Cert: pki.cert, Key: pki.ca},
	} {
		if _, err := f.Config(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	notPEM := filepath.Join(pki.dir, "junk")
	os.WriteFile(notPEM, []byte("junk"), 0o600)
	if _, err := (TLSFiles{CA: notPEM}).Config(); err == nil || !strings.Contains(err.Error(), "no PEM") {
		t.Errorf("junk CA: %v", err)
	}
}
