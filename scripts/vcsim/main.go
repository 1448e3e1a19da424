// cloudcore's vCenter simulator: govmomi's simulator package behind a small command line.
//
// Debian's golang-github-vmware-govmomi-dev ships the simulator library but not the upstream
// vcsim command, so scripts/lib.sh (ensure_vcsim) builds this file offline in GOPATH mode.
// It serves a vCenter inventory on the given address (port 0 picks a free one) and prints one
// line, "VCSIM_URL=https://user:pass@host:port/sdk", once it accepts connections. SIGTERM or
// SIGINT stops it and removes the datastores' temporary directories.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:0", "listen address (port 0: any free port)")
	plain := flag.Bool("plain", false, "serve plain http instead of https")
	clusterHosts := flag.Int("cluster-host", 3, "ESXi hosts in the datacenter's cluster")
	standalone := flag.Int("host", 1, "standalone ESXi hosts in the datacenter")
	machines := flag.Int("vm", 0, "VMs created in each host's resource pool at start")
	datastores := flag.Int("ds", 2, "local datastores, mounted on every host")
	user := flag.String("username", "user", "login user name")
	pass := flag.String("password", "pass", "login password")
	flag.Parse()

	model := simulator.VPX()
	model.Datacenter, model.Cluster, model.Portgroup = 1, 1, 1
	model.ClusterHost, model.Host = *clusterHosts, *standalone
	model.Machine, model.Datastore = *machines, *datastores
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	if !*plain {
		model.Service.TLS = new(tls.Config) // the simulator's own self-signed certificate
	}
	model.Service.RegisterEndpoints = true
	server := model.Service.NewServer()
	fmt.Printf("VCSIM_URL=%s\n", server.URL)
	_ = os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	server.Close()
}
