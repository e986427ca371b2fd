// faultproxy: an HTTP proxy placed between a registry client and a registry
// in tests, injecting the faults registries and networks produce. Standard
// library only.
//
//	faultproxy -upstream 127.0.0.1:5000 -addr-file F [-storage-addr-file G] \
//	  [-rules RULES.json] [-log L]
//
// It listens on two ports: the proxy itself, and "blob storage", where a
// "redirect" rule sends blob GETs (like a registry redirecting to S3). The
// storage port fetches from the registry with the credentials the client
// sent to the proxy (a real registry signs the URL instead), and records
// whether the client sent credentials to storage — which it must not.
//
// RULES.json is a list; the first rule whose match fits a request and that
// still has uses left decides what happens:
//
//	{"path": "/blobs/", "method": "GET", "skip": 0, "times": 1,
//	 "fault": "status|reset|stall|ignore_range|corrupt|redirect|body|delay",
//	 "status": 503, "retry_after": "1", "after_bytes": 65536, "delay_ms": 2000,
//	 "body_file": "/x", "content_type": "...", "headers": {"K": "V"},
//	 "url_lifetime_ms": 1000}
//
// status: answer with status (and Retry-After) without asking upstream.
// reset: forward; after after_bytes of body, wait delay_ms, then RST the connection.
// stall: forward; after after_bytes of body, send nothing more for delay_ms, then close.
// ignore_range: drop the Range header, so upstream answers 200 with the whole blob.
// corrupt: forward, flipping the body byte at offset after_bytes.
// redirect: answer 307 to the storage port; its URL expires after url_lifetime_ms (0: never).
// body: answer status (default 200) with body_file's bytes, content_type and headers.
// delay: wait delay_ms, then forward.
// times 0 means unlimited; skip lets that many matching requests pass first.
//
// -log gets one JSON line per request: {"port":"proxy|storage","method","path",
// "range","auth":bool,"status","fault","remote":"ip:port","inflight":n,
// "x_evs_test": the X-Evs-Test request header (to see configured headers)}.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type rule struct {
	Path          string            `json:"path"`
	Method        string            `json:"method"`
	Skip          int64             `json:"skip"`
	Times         int64             `json:"times"`
	Fault         string            `json:"fault"`
	Status        int               `json:"status"`
	RetryAfter    string            `json:"retry_after"`
	AfterBytes    int64             `json:"after_bytes"`
	DelayMs       int64             `json:"delay_ms"`
	BodyFile      string            `json:"body_file"`
	ContentType   string            `json:"content_type"`
	Headers       map[string]string `json:"headers"`
	URLLifetimeMs int64             `json:"url_lifetime_ms"`
	seen          int64
}

type grant struct {
	auth    string
	path    string
	expires time.Time
}

var (
	upstream    string
	storageAddr string
	rules       []*rule
	rulesMu     sync.Mutex
	grants      sync.Map // id → grant
	logMu       sync.Mutex
	logFile     *os.File
	inflight    int64
	transport   = &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16, DisableCompression: true}
)

func record(port string, r *http.Request, status int, fault string) {
	if logFile == nil {
		return
	}
	b, _ := json.Marshal(map[string]interface{}{
		"port": port, "method": r.Method, "path": r.URL.Path, "range": r.Header.Get("Range"),
		"auth": r.Header.Get("Authorization") != "", "status": status, "fault": fault,
		"remote": r.RemoteAddr, "inflight": r.Context().Value(inflightKey{}),
		"x_evs_test": r.Header.Get("X-Evs-Test"),
	})
	logMu.Lock()
	logFile.Write(append(b, '\n'))
	logMu.Unlock()
}

// The rule for this request, consuming one use.
func pick(r *http.Request) *rule {
	rulesMu.Lock()
	defer rulesMu.Unlock()
	for _, ru := range rules {
		if ru.Path != "" && !strings.Contains(r.URL.Path, ru.Path) {
			continue
		}
		if ru.Method != "" && ru.Method != r.Method {
			continue
		}
		n := ru.seen
		if ru.Times > 0 && n >= ru.Skip+ru.Times {
			continue
		}
		ru.seen++
		if n < ru.Skip {
			return nil
		}
		return ru
	}
	return nil
}

func forward(r *http.Request, path string, auth string, dropRange bool) (*http.Response, error) {
	url := "http://" + upstream + path
	req, err := http.NewRequest(r.Method, url, r.Body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = r.ContentLength
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Del("Authorization")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if dropRange {
		req.Header.Del("Range")
	}
	req.Host = r.Host
	return transport.RoundTrip(req)
}

// Copies the upstream response, applying body faults.
func relay(w http.ResponseWriter, resp *http.Response, ru *rule) {
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	fault := ""
	if ru != nil {
		fault = ru.Fault
	}
	success := resp.StatusCode >= 200 && resp.StatusCode < 300
	if !success || (fault != "reset" && fault != "stall" && fault != "corrupt") {
		io.Copy(w, resp.Body)
		return
	}
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		limit := int64(len(buf))
		if fault != "corrupt" && sent < ru.AfterBytes && ru.AfterBytes-sent < limit {
			limit = ru.AfterBytes - sent
		}
		if fault != "corrupt" && sent >= ru.AfterBytes {
			break
		}
		n, err := resp.Body.Read(buf[:limit])
		if n > 0 {
			chunk := buf[:n]
			if fault == "corrupt" && ru.AfterBytes >= sent && ru.AfterBytes < sent+int64(n) {
				chunk[ru.AfterBytes-sent] ^= 0x5a
			}
			if _, werr := w.Write(chunk); werr != nil {
				return
			}
			sent += int64(n)
		}
		if err != nil {
			return
		}
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	time.Sleep(time.Duration(ru.DelayMs) * time.Millisecond)
	if hj, ok := w.(http.Hijacker); ok {
		conn, _, err := hj.Hijack()
		if err == nil {
			if tc, ok := conn.(*net.TCPConn); ok && fault == "reset" {
				tc.SetLinger(0) // close with RST, as a dropped connection does
			}
			conn.Close()
		}
	}
}

type inflightKey struct{}

// Counts requests in progress, so tests can check a client's per-host
// connection limit from the log ("inflight" when each request started).
func counted(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n := atomic.AddInt64(&inflight, 1)
		defer atomic.AddInt64(&inflight, -1)
		h(w, r.WithContext(context.WithValue(r.Context(), inflightKey{}, n)))
	}
}

func proxyHandler(w http.ResponseWriter, r *http.Request) {
	ru := pick(r)
	fault := ""
	if ru != nil {
		fault = ru.Fault
	}
	switch fault {
	case "status":
		if ru.RetryAfter != "" {
			w.Header().Set("Retry-After", ru.RetryAfter)
		}
		for k, v := range ru.Headers {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(ru.Status)
		fmt.Fprintf(w, `{"errors":[{"code":"UNAVAILABLE","message":"injected %d"}]}`, ru.Status)
		record("proxy", r, ru.Status, fault)
		return
	case "body":
		data, err := os.ReadFile(ru.BodyFile)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		status := ru.Status
		if status == 0 {
			status = 200
		}
		if ru.ContentType != "" {
			w.Header().Set("Content-Type", ru.ContentType)
		}
		for k, v := range ru.Headers {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			w.Write(data)
		}
		record("proxy", r, status, fault)
		return
	case "redirect":
		// Like a registry, check access before handing out a signed URL.
		head, err := http.NewRequest(http.MethodHead, "http://"+upstream+r.URL.RequestURI(), nil)
		if err == nil {
			if auth := r.Header.Get("Authorization"); auth != "" {
				head.Header.Set("Authorization", auth)
			}
			resp, err := transport.RoundTrip(head)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusUnauthorized {
					for k, vs := range resp.Header {
						for _, v := range vs {
							w.Header().Add(k, v)
						}
					}
					// HEAD's Content-Length does not describe this body.
					w.Header().Del("Content-Length")
					w.WriteHeader(resp.StatusCode)
					fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
					record("proxy", r, resp.StatusCode, fault)
					return
				}
			}
		}
		id := make([]byte, 16)
		rand.Read(id)
		sig := hex.EncodeToString(id)
		g := grant{auth: r.Header.Get("Authorization"), path: r.URL.Path}
		if ru.URLLifetimeMs > 0 {
			g.expires = time.Now().Add(time.Duration(ru.URLLifetimeMs) * time.Millisecond)
		}
		grants.Store(sig, g)
		w.Header().Set("Location", "http://"+storageAddr+"/storage"+r.URL.Path+"?sig="+sig)
		w.WriteHeader(http.StatusTemporaryRedirect)
		record("proxy", r, http.StatusTemporaryRedirect, fault)
		return
	case "delay":
		time.Sleep(time.Duration(ru.DelayMs) * time.Millisecond)
	}
	resp, err := forward(r, r.URL.RequestURI(), r.Header.Get("Authorization"), fault == "ignore_range")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		record("proxy", r, http.StatusBadGateway, fault)
		return
	}
	// Upstream redirects (e.g. upload Locations) point at upstream; keep
	// them on the proxy.
	if loc := resp.Header.Get("Location"); loc != "" {
		resp.Header.Set("Location", strings.Replace(loc, "http://"+upstream, "http://"+r.Host, 1))
	}
	record("proxy", r, resp.StatusCode, fault)
	relay(w, resp, ru)
}

func storageHandler(w http.ResponseWriter, r *http.Request) {
	sig := r.URL.Query().Get("sig")
	v, ok := grants.Load(sig)
	if !ok || r.Header.Get("Authorization") != "" {
		// S3 refuses a request that carries both a signature and an
		// Authorization header; so do we, and the log records it.
		record("storage", r, http.StatusBadRequest, "")
		http.Error(w, "unknown signature or unexpected Authorization header", http.StatusBadRequest)
		return
	}
	g := v.(grant)
	if !g.expires.IsZero() && time.Now().After(g.expires) {
		record("storage", r, http.StatusForbidden, "expired")
		http.Error(w, "signed URL expired", http.StatusForbidden)
		return
	}
	resp, err := forward(r, g.path, g.auth, false)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	record("storage", r, resp.StatusCode, "")
	relay(w, resp, nil)
}

func listen(h http.HandlerFunc) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(http.Serve(ln, h)) }()
	return ln.Addr().String()
}

func writeAddr(path, addr string) {
	if path == "" {
		return
	}
	os.WriteFile(path+".tmp", []byte(addr), 0644)
	os.Rename(path+".tmp", path)
}

func main() {
	flag.StringVar(&upstream, "upstream", "", "registry host:port")
	addrFile := flag.String("addr-file", "", "write the proxy's host:port here")
	storageFile := flag.String("storage-addr-file", "", "write the storage port's host:port here")
	rulesPath := flag.String("rules", "", "JSON rules file")
	logPath := flag.String("log", "", "append one JSON line per request here")
	flag.Parse()
	if upstream == "" {
		log.Fatal("-upstream is required")
	}
	if *rulesPath != "" {
		data, err := os.ReadFile(*rulesPath)
		if err != nil {
			log.Fatal(err)
		}
		if err := json.Unmarshal(data, &rules); err != nil {
			log.Fatalf("%s: %v", *rulesPath, err)
		}
	}
	if *logPath != "" {
		var err error
		logFile, err = os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0644)
		if err != nil {
			log.Fatal(err)
		}
	}
	storageAddr = listen(counted(storageHandler))
	proxyAddr := listen(counted(proxyHandler))
	writeAddr(*storageFile, storageAddr)
	writeAddr(*addrFile, proxyAddr)
	select {}
}
