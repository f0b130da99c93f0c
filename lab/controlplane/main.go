// Command controlplane is a multi-call binary holding the upstream Kubernetes
// control plane (kube-apiserver, kube-controller-manager, kube-scheduler) and
// etcd, built from the modules pinned in go.mod.
//
// Each component must run in its own process: the upstream commands install
// signal handlers that panic when set up twice in one process. Run it as
//
//	controlplane COMPONENT [FLAGS...]
//
// with COMPONENT one of etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, version. The flags are the upstream binaries' own.
package main

import (
	"fmt"
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/component-base/version"
)

const usage = `usage: controlplane COMPONENT [FLAGS...]

components:
  etcd                      go.etcd.io/etcd/server/v3 (etcdmain)
  kube-apiserver            k8s.io/kubernetes/cmd/kube-apiserver
  kube-controller-manager   k8s.io/kubernetes/cmd/kube-controller-manager
  kube-scheduler            k8s.io/kubernetes/cmd/kube-scheduler
  version                   print the Kubernetes version built in
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	component, args := os.Args[1], os.Args[2:]
	switch component {
	case "etcd":
		// etcdmain reads os.Args itself and expects the program name first.
		etcdmain.Main(append([]string{"etcd"}, args...))
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "version":
		fmt.Println(version.Get().GitVersion)
	default:
		fmt.Fprintf(os.Stderr, "unknown component %q\n\n%s", component, usage)
		os.Exit(2)
	}
}
