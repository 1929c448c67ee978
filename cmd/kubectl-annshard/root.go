package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// globalOptions are the flags of every command.
type globalOptions struct {
	config  *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	via     string
	token   string
	verbose int
}

// logf prints a diagnostic to stderr when -v is at least level.
func (g *globalOptions) logf(level int, format string, args ...any) {
	if g.verbose >= level {
		fmt.Fprintf(g.streams.ErrOut, "I: "+format+"\n", args...)
	}
}

func newRootCmd(streams genericiooptions.IOStreams) *cobra.Command {
	g := &globalOptions{config: genericclioptions.NewConfigFlags(true), streams: streams}
	root := &cobra.Command{
		Use:   "kubectl-annshard",
		Short: "See, load and query annshard vector indexes",
		Long: `kubectl annshard shows what an AnnIndex is doing, loads vector files into it and queries it,
from outside the cluster with your kubeconfig.

It reaches the index's routers and pods through the API server's service and pod proxy, which
works on any cluster you can reach. Where the API server cannot proxy (pod IPs that are not
global unicast, such as the loopback pod IPs of annshard's local cluster, or a Service without
endpoints) it talks to the pod IPs directly when they are reachable from where it runs. -v says
which way it took; --via=proxy or --via=direct forces one.

Writes need the index's token: it is read from the Secret <index>-token when you may read it,
or given with --token (or $ANNSHARD_TOKEN).

` + exitCodesHelp,
		Example: `  kubectl annshard status products
  kubectl annshard top products --watch
  kubectl annshard import products sift_base.fvecs
  kubectl annshard search products --id 42 -k 5`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	if strings.HasPrefix(os.Args[0], "kubectl-") || strings.Contains(os.Args[0], "/kubectl-") {
		root.Use = "kubectl annshard"
	}
	fs := root.PersistentFlags()
	// kubectl's --token is the API server's bearer token; here --token is the index's
	// write token (the interface), so the API server's moves to --kube-token.
	g.config.BearerToken = nil
	g.config.AddFlags(fs)
	kubeToken := ""
	fs.StringVar(&kubeToken, "kube-token", "", "bearer token for authentication to the API server (kubectl's --token)")
	g.config.BearerToken = &kubeToken
	fs.StringVar(&g.via, "via", viaAuto, "how to reach the index's pods: auto, proxy (the API server's service and pod proxy) or direct (pod IPs)")
	fs.StringVar(&g.token, "token", os.Getenv("ANNSHARD_TOKEN"), "the index's write token (default: read from the Secret <index>-token, or $ANNSHARD_TOKEN)")
	fs.IntVarP(&g.verbose, "v", "v", 0, "log level: 1 says how pods are reached and where the token comes from; 2 adds every retry")
	fs.Lookup("v").NoOptDefVal = "1"
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return withCode(exitUsage, fmt.Errorf("%w\nSee '%s --help'", err, c.CommandPath()))
	})
	root.AddCommand(newStatusCmd(g), newTopCmd(g), newImportCmd(g), newSearchCmd(g))
	for _, c := range root.Commands() {
		c.SetFlagErrorFunc(root.FlagErrorFunc())
	}
	return root
}

// exactArgs is cobra.ExactArgs with the usage exit code and a message that names the
// missing argument.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return codef(exitUsage, "%s needs %s, got %d argument(s)\nSee '%s --help'", c.Name(), names, len(args), c.CommandPath())
		}
		return nil
	}
}

// isTerminal reports whether w is a terminal (colour, progress bars, screen refresh).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
