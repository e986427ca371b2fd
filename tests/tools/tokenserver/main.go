// tokenserver: a registry token server for tests (distribution
// docs/spec/auth/token.md). It signs ES256 JWTs with a key generated at
// start, carrying the certificate in the "x5c" header; the registry trusts
// them through its auth.token.rootcertbundle, which is the certificate
// written to -cert. Standard library only.
//
//	tokenserver -listen 127.0.0.1:0 -addr-file F -cert C.pem -issuer I -service S \
//	  [-users u:p,...] [-refresh-tokens t,...] [-lifetime 2s] [-expires-in 300] [-log L]
//
// With -users, a token request must carry valid Basic credentials (or a
// valid refresh token in a POST); without, anyone gets a token. -lifetime
// sets the token's real validity ("exp" claim, which the registry checks);
// -expires-in is what the client is told, so tests can make tokens expire
// while the client still trusts them.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

var (
	key      *ecdsa.PrivateKey
	certDER  []byte
	issuer   = flag.String("issuer", "evs-test-token-server", "JWT iss claim")
	service  = flag.String("service", "evs-test-registry", "expected service (JWT aud)")
	users    = flag.String("users", "", "comma-separated user:password pairs; empty: anonymous")
	refresh  = flag.String("refresh-tokens", "", "comma-separated refresh tokens accepted by POST")
	lifetime = flag.Duration("lifetime", 5*time.Minute, "real token validity")
	expires  = flag.Int("expires-in", -1, "expires_in told to clients (default: lifetime)")
	leeway   = flag.Duration("registry-leeway", 0, "subtracted from exp to cancel the registry's clock leeway")
	issued   int64
	logMu    sync.Mutex
	logFile  *os.File
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func sign(sub string, acc []access) (string, error) {
	now := time.Now()
	header := map[string]interface{}{
		"typ": "JWT", "alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(certDER)},
	}
	claims := map[string]interface{}{
		"iss": *issuer, "sub": sub, "aud": *service,
		"exp": now.Add(*lifetime - *leeway).Unix(), "nbf": now.Add(-time.Minute).Unix(),
		"iat": now.Unix(), "jti": fmt.Sprintf("%d-%d", now.UnixNano(), atomic.AddInt64(&issued, 1)),
		"access": acc,
	}
	hj, _ := json.Marshal(header)
	cj, _ := json.Marshal(claims)
	input := b64(hj) + "." + b64(cj)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64(sig), nil
}

// "repository:name:pull,push" → access entry; the name may contain ':'
// only for a port, which repository names cannot have, so split from both ends.
func parseScope(scope string) (access, bool) {
	first := strings.Index(scope, ":")
	last := strings.LastIndex(scope, ":")
	if first < 0 || last <= first {
		return access{}, false
	}
	return access{Type: scope[:first], Name: scope[first+1 : last],
		Actions: strings.Split(scope[last+1:], ",")}, true
}

func record(entry map[string]interface{}) {
	if logFile == nil {
		return
	}
	b, _ := json.Marshal(entry)
	logMu.Lock()
	logFile.Write(append(b, '\n'))
	logMu.Unlock()
}

func handleToken(w http.ResponseWriter, r *http.Request) {
	sub := "anonymous"
	var scopes []string
	grant := "get"
	if r.Method == http.MethodPost {
		grant = "refresh_token"
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		token := r.PostForm.Get("refresh_token")
		ok := false
		for _, t := range strings.Split(*refresh, ",") {
			if t != "" && t == token {
				ok = true
			}
		}
		if !ok {
			record(map[string]interface{}{"grant": grant, "ok": false})
			http.Error(w, "invalid refresh token", http.StatusUnauthorized)
			return
		}
		sub = "refresh"
		scopes = strings.Fields(r.PostForm.Get("scope"))
	} else {
		scopes = r.URL.Query()["scope"]
		if *users != "" {
			u, p, has := r.BasicAuth()
			ok := false
			for _, pair := range strings.Split(*users, ",") {
				if has && pair == u+":"+p {
					ok = true
				}
			}
			if !ok {
				record(map[string]interface{}{"grant": grant, "ok": false, "had_auth": has})
				w.Header().Set("WWW-Authenticate", `Basic realm="evs-test-token"`)
				http.Error(w, "invalid credentials", http.StatusUnauthorized)
				return
			}
			sub = u
		}
	}
	var acc []access
	for _, s := range scopes {
		for _, part := range strings.Fields(s) {
			if a, ok := parseScope(part); ok {
				acc = append(acc, a)
			}
		}
	}
	token, err := sign(sub, acc)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	told := *expires
	if told < 0 {
		told = int(lifetime.Seconds())
	}
	record(map[string]interface{}{"grant": grant, "ok": true, "sub": sub, "scopes": scopes,
		"service": r.URL.Query().Get("service")})
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]interface{}{
		"token": token, "access_token": token, "expires_in": told,
		"issued_at": time.Now().UTC().Format(time.RFC3339),
	})
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	addrFile := flag.String("addr-file", "", "write the bound host:port here")
	certPath := flag.String("cert", "", "write the signing certificate (PEM) here")
	logPath := flag.String("log", "", "append one JSON line per token request here")
	flag.Parse()

	var err error
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "evs test token signer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	if *certPath != "" {
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
		if err := os.WriteFile(*certPath, pemBytes, 0644); err != nil {
			log.Fatal(err)
		}
	}
	if *logPath != "" {
		logFile, err = os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0644)
		if err != nil {
			log.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		os.WriteFile(tmp, []byte(ln.Addr().String()), 0644)
		os.Rename(tmp, *addrFile)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", handleToken)
	log.Fatal(http.Serve(ln, mux))
}
