// vcsim for the odt import tests: govmomi's vCenter simulator (VPX model) on loopback,
// plus what the tests need to see what a client did to it.
//
// The simulator's /nfc/ handler counts uploaded bytes and discards them; the tap in front
// of it keeps a copy of every upload under -tap DIR (DIR/<lease>/<file>, renamed from a
// ".part" name once the upload ends well), so a test can byte-compare what arrived.
// GET /odt-test/inventory answers the VMs as JSON (name, managed object id, inventory
// path of the folder, annotation) and the number of Login requests received.
//
// On start it prints one JSON line on stdout: url, thumbprint (SHA-256 of the server's
// certificate), datastore directory. It stops when stdin closes or on SIGTERM.
//
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o vcsim .
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	plain := flag.Bool("http", false, "serve plain HTTP instead of HTTPS")
	tap := flag.String("tap", "", "folder keeping a copy of every NFC upload")
	user := flag.String("user", "odt", "user name the simulator accepts")
	pass := flag.String("password", "secret", "password the simulator accepts")
	folders := flag.String("folders", "", "comma-separated VM folders to create under the datacenter's vm folder")
	slow := flag.Int("slow-upload-kib", 0, "if set, pass uploads on at most this many KiB per 10 ms (to kill a client mid-upload)")
	flag.Parse()

	model := simulator.VPX()
	model.Machine = 1
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	if !*plain {
		// A fresh P-256 certificate: the simulator's built-in one is the old 1024-bit RSA
		// test certificate, which current TLS stacks refuse to verify signatures with.
		cert, err := selfSigned()
		if err != nil {
			log.Fatal(err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	dc := simulator.Map.Any("Datacenter").(*simulator.Datacenter)
	for _, name := range strings.Split(*folders, ",") {
		if name == "" {
			continue
		}
		vmFolder := simulator.Map.Get(dc.VmFolder).(*simulator.Folder)
		ctx := &simulator.Context{Map: simulator.Map}
		res := vmFolder.CreateFolder(ctx, &types.CreateFolder{This: vmFolder.Self, Name: name})
		if f := res.Fault(); f != nil {
			log.Fatalf("cannot create folder %s: %v", name, f.VimFault())
		}
	}
	s := model.Service.NewServer()
	defer s.Close()

	mux := s.Config.Handler
	s.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/odt-test/inventory" {
			inventory(w)
			return
		}
		if r.URL.Path == "/sdk" && r.Method == http.MethodPost {
			body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if strings.Contains(string(body), "<Login ") {
				atomic.AddInt64(&logins, 1)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		if *tap != "" && strings.HasPrefix(r.URL.Path, "/nfc/") &&
			(r.Method == http.MethodPut || r.Method == http.MethodPost) {
			tapUpload(w, r, mux, *tap, *slow)
			return
		}
		mux.ServeHTTP(w, r)
	})

	thumb := ""
	dsDir := ""
	if ds, ok := simulator.Map.Any("Datastore").(*simulator.Datastore); ok {
		dsDir = ds.Info.GetDatastoreInfo().Url
	}
	if !*plain {
		sum := sha256.Sum256(s.Certificate().Raw)
		thumb = hex.EncodeToString(sum[:])
	}
	u := *s.URL
	u.User = nil
	out, _ := json.Marshal(map[string]string{"url": u.String(), "thumbprint": thumb, "datastore_dir": dsDir})
	fmt.Println(string(out))

	// Runs until stdin closes (the test holding the pipe ends).
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// selfSigned makes a self-signed certificate for 127.0.0.1 and localhost.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "vcsim.odt.test", Organization: []string{"odt import tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// tapUpload keeps a copy of the request body while the simulator's handler consumes it.
func tapUpload(w http.ResponseWriter, r *http.Request, next http.Handler, dir string, slow int) {
	p := strings.Split(strings.TrimPrefix(r.URL.Path, "/nfc/"), "/")
	if len(p) != 2 || strings.Contains(p[0], "..") || strings.Contains(p[1], "..") {
		http.NotFound(w, r)
		return
	}
	d := filepath.Join(dir, p[0])
	if err := os.MkdirAll(d, 0o755); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	final := filepath.Join(d, p[1])
	part := final + ".part"
	f, err := os.Create(part)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	tee := &teeBody{r: r.Body, f: f, slow: slow}
	r.Body = tee
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	next.ServeHTTP(rec, r)
	_ = f.Close()
	if tee.err == nil && tee.eof && rec.status == http.StatusOK {
		_ = os.Rename(part, final)
	}
}

type teeBody struct {
	r    io.ReadCloser
	f    *os.File
	err  error
	eof  bool
	slow int
}

func (t *teeBody) Read(b []byte) (int, error) {
	if t.slow > 0 {
		time.Sleep(10 * time.Millisecond)
		if len(b) > t.slow*1024 {
			b = b[:t.slow*1024]
		}
	}
	n, err := t.r.Read(b)
	if n > 0 {
		if _, werr := t.f.Write(b[:n]); werr != nil && t.err == nil {
			t.err = werr
		}
	}
	if err == io.EOF {
		t.eof = true
	} else if err != nil && t.err == nil {
		t.err = err
	}
	return n, err
}

func (t *teeBody) Close() error { return t.r.Close() }

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Login requests received (to show a client stopped before sending credentials).
var logins int64

type vmInfo struct {
	Name       string `json:"name"`
	Moref      string `json:"moref"`
	Folder     string `json:"folder"`
	Annotation string `json:"annotation"`
}

// inventory lists the VMs with the inventory path of their folder ("/DC0/vm/odt").
func inventory(w http.ResponseWriter) {
	var vms []vmInfo
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		info := vmInfo{Name: vm.Name, Moref: vm.Self.Value}
		if vm.Config != nil {
			info.Annotation = vm.Config.Annotation
		}
		var names []string
		parent := vm.Parent
		for parent != nil {
			obj := simulator.Map.Get(*parent)
			if obj == nil {
				break
			}
			ent, ok := obj.(mo.Entity)
			if !ok {
				break
			}
			me := ent.Entity()
			if me.Parent == nil { // the root folder
				break
			}
			names = append([]string{me.Name}, names...)
			parent = me.Parent
		}
		info.Folder = "/" + strings.Join(names, "/")
		vms = append(vms, info)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]interface{}{"vms": vms, "logins": atomic.LoadInt64(&logins)})
}
