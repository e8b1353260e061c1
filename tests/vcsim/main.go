// vcsim for the odt import tests: govmomi's vCenter simulator (VPX model) on loopback,
// plus what the tests need to see what a client did to it.
//
// The simulator's /nfc/ handler counts uploaded bytes and discards them; the tap in front
// of it keeps a copy of every upload under -tap DIR (DIR/<lease>/<file>, renamed from a
// ".part" name once the upload ends well), so a test can byte-compare what arrived.
// GET /odt-test/inventory answers the VMs as JSON (name, managed object id, inventory
// path of the folder, annotation, power state, resource pool, networks, datastores), the
// number of Login requests received and the SOAP requests received by method.
// POST /odt-test/full-speed ends -slow-upload-kib for the uploads that start after it (a
// rerun after the kill need not crawl).
//
// -pools adds resource pools under the cluster DC0_C0; -foreign puts a VM that odt did
// not make (one of the model's, renamed, with notes of its own) into a folder, for the
// name-conflict test; -datastores adds datastores (the simulator keeps a VM's files in a
// folder named after it and refuses a second VM of that name on the same datastore).
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
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
	pools := flag.String("pools", "", "comma-separated resource pools to create under cluster DC0_C0")
	foreign := flag.String("foreign", "", "comma-separated NAME@FOLDER: a VM odt did not make, named NAME, in that VM folder")
	datastores := flag.Int("datastores", 1, "number of datastores (LocalDS_0, LocalDS_1, ...), each on every host")
	flag.Parse()
	slowKiB = int64(*slow)

	model := simulator.VPX()
	model.Machine = 1
	model.Datastore = *datastores
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
	ctx := &simulator.Context{Map: simulator.Map}
	vmFolder := simulator.Map.Get(dc.VmFolder).(*simulator.Folder)
	created := map[string]*simulator.Folder{}
	for _, name := range strings.Split(*folders, ",") {
		if name == "" {
			continue
		}
		res := vmFolder.CreateFolder(ctx, &types.CreateFolder{This: vmFolder.Self, Name: name})
		if f := res.Fault(); f != nil {
			log.Fatalf("cannot create folder %s: %v", name, f.VimFault())
		}
		ref := res.(*methods.CreateFolderBody).Res.Returnval
		created[name] = simulator.Map.Get(ref).(*simulator.Folder)
	}
	for _, name := range strings.Split(*pools, ",") {
		if name == "" {
			continue
		}
		cluster := simulator.Map.FindByName("DC0_C0", simulator.Map.Get(dc.HostFolder).(*simulator.Folder).ChildEntity)
		root := simulator.Map.Get(*cluster.(*simulator.ClusterComputeResource).ResourcePool).(*simulator.ResourcePool)
		res := root.CreateResourcePool(&types.CreateResourcePool{This: root.Self, Name: name, Spec: types.DefaultResourceConfigSpec()})
		if f := res.Fault(); f != nil {
			log.Fatalf("cannot create resource pool %s: %v", name, f.VimFault())
		}
	}
	for _, spec := range strings.Split(*foreign, ",") {
		if spec == "" {
			continue
		}
		p := strings.SplitN(spec, "@", 2)
		f, ok := created[p[len(p)-1]]
		if len(p) != 2 || !ok {
			log.Fatalf("-foreign %s: give NAME@FOLDER with FOLDER in -folders", spec)
		}
		// The standalone host's VM: renamed, moved, with notes of its own.
		vm := simulator.Map.FindByName("DC0_H0_VM0", vmFolder.ChildEntity).(*simulator.VirtualMachine)
		if r := f.MoveIntoFolderTask(ctx, &types.MoveIntoFolder_Task{This: f.Self, List: []types.ManagedObjectReference{vm.Self}}); r.Fault() != nil {
			log.Fatalf("cannot move %s: %v", vm.Name, r.Fault().VimFault())
		}
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "name", Val: p[0]}})
		vm.Config.Annotation = "a VM of the provider's own, not odt's"
	}
	s := model.Service.NewServer()
	defer s.Close()

	mux := s.Config.Handler
	s.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/odt-test/inventory" {
			inventory(w)
			return
		}
		if r.URL.Path == "/odt-test/full-speed" && r.Method == http.MethodPost {
			atomic.StoreInt64(&slowKiB, 0)
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
			countCall(string(body))
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		if *tap != "" && strings.HasPrefix(r.URL.Path, "/nfc/") &&
			(r.Method == http.MethodPut || r.Method == http.MethodPost) {
			tapUpload(w, r, mux, *tap, int(atomic.LoadInt64(&slowKiB)))
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

// slowKiB is -slow-upload-kib until POST /odt-test/full-speed.
var slowKiB int64

// SOAP requests received, by method (to show what a client did not send).
var (
	callsMu sync.Mutex
	calls   = map[string]int64{}
)

// countCall counts the method of a SOAP request: the first element in its Body.
func countCall(body string) {
	i := strings.Index(body, "Body>")
	if i < 0 {
		return
	}
	rest := strings.TrimLeft(body[i+len("Body>"):], " \t\r\n")
	if !strings.HasPrefix(rest, "<") {
		return
	}
	end := strings.IndexAny(rest, " />")
	if end < 0 {
		return
	}
	name := rest[1:end]
	if j := strings.Index(name, ":"); j >= 0 {
		name = name[j+1:]
	}
	callsMu.Lock()
	calls[name]++
	callsMu.Unlock()
}

type vmInfo struct {
	Name       string   `json:"name"`
	Moref      string   `json:"moref"`
	Folder     string   `json:"folder"`
	Annotation string   `json:"annotation"`
	PowerState string   `json:"power_state"`
	Pool       string   `json:"pool"`
	Networks   []string `json:"networks"`
	Datastores []string `json:"datastores"`
}

// name of an inventory object ("" if unknown).
func name(ref *types.ManagedObjectReference) string {
	if ref == nil {
		return ""
	}
	if e, ok := simulator.Map.Get(*ref).(mo.Entity); ok {
		return e.Entity().Name
	}
	return ""
}

// inventory lists the VMs with the inventory path of their folder ("/DC0/vm/odt").
func inventory(w http.ResponseWriter) {
	var vms []vmInfo
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		info := vmInfo{Name: vm.Name, Moref: vm.Self.Value, PowerState: string(vm.Runtime.PowerState), Pool: name(vm.ResourcePool), Networks: []string{}}
		for i := range vm.Network {
			info.Networks = append(info.Networks, name(&vm.Network[i]))
		}
		info.Datastores = []string{}
		for i := range vm.Datastore {
			info.Datastores = append(info.Datastores, name(&vm.Datastore[i]))
		}
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
	callsMu.Lock()
	defer callsMu.Unlock()
	_ = json.NewEncoder(w).Encode(map[string]interface{}{"vms": vms, "logins": atomic.LoadInt64(&logins), "calls": calls})
}
