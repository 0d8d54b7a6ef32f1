package samplerd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"samplerd.dev/samplerd"
	pb "samplerd.dev/samplerd/gen/samplerd/v1"
)

// standIn answers every step with token 7 and records the authorization header of each call.
type standIn struct {
	pb.UnimplementedSamplerServer
	mu   sync.Mutex
	auth [][]string
}

func (s *standIn) Sample(stream pb.Sampler_SampleServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	s.mu.Lock()
	s.auth = append(s.auth, md.Get("authorization"))
	s.mu.Unlock()
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		resp := &pb.SampleResponse{}
		for _, st := range req.Steps {
			resp.Results = append(resp.Results, &pb.StepResult{SequenceId: st.SequenceId, Step: st.Step, Token: 7, Seed: 1})
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func serveStandIn(t *testing.T, opts ...grpc.ServerOption) (*standIn, string) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	s := &standIn{}
	pb.RegisterSamplerServer(srv, s)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return s, lis.Addr().String()
}

func TestTokenIsSentAsBearer(t *testing.T) {
	s, addr := serveStandIn(t)
	c := newClient(t, []string{addr}, samplerd.Options{Token: "s3cret"})
	r, err := c.Session(samplerd.SessionOptions{Seed: 1}).Step(context.Background(), samplerd.F32(make([]float32, 4)), nil)
	if err != nil || r.Token != 7 {
		t.Fatalf("%+v %v", r, err)
	}
	plain := newClient(t, []string{addr}, samplerd.Options{})
	if _, err := plain.Session(samplerd.SessionOptions{Seed: 1}).Step(context.Background(), samplerd.F32(make([]float32, 4)), nil); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.auth) != 2 || len(s.auth[0]) != 1 || s.auth[0][0] != "Bearer s3cret" || len(s.auth[1]) != 0 {
		t.Fatalf("authorization headers seen: %q", s.auth)
	}
}

func TestTLSWithPrivateCA(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "samplerd-test"},
		DNSNames: []string{"samplerd.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	s, addr := serveStandIn(t, grpc.Creds(credentials.NewTLS(serverTLS)))
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c := newClient(t, []string{addr}, samplerd.Options{TLS: &tls.Config{RootCAs: pool, ServerName: "samplerd.test"}, Token: "tok"})
	r, err := c.Session(samplerd.SessionOptions{Seed: 1}).Step(context.Background(), samplerd.F32(make([]float32, 4)), nil)
	if err != nil || r.Token != 7 || s.auth[0][0] != "Bearer tok" {
		t.Fatalf("%+v %v %q", r, err, s.auth)
	}
	untrusted := newClient(t, []string{addr}, samplerd.Options{TLS: &tls.Config{}, FailoverTimeout: 500 * time.Millisecond})
	_, err = untrusted.Session(samplerd.SessionOptions{Seed: 1}).Step(context.Background(), samplerd.F32(make([]float32, 4)), nil)
	if !errors.Is(err, samplerd.ErrUnavailable) {
		t.Fatalf("an untrusted server was accepted: %v", err)
	}
}
