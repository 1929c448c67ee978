// Command kubectl-annshard is the kubectl plugin of annshard: `kubectl annshard status`,
// `top`, `import` and `search` show an index, load vector files into it and query it,
// from outside the cluster with the user's kubeconfig. Install it on the PATH (go install
// github.com/annshard/annshard/cmd/kubectl-annshard@latest) and kubectl finds it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, streams genericiooptions.IOStreams) int {
	root := newRootCmd(streams)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(streams.ErrOut, "error:", err)
	}
	return exitCodeOf(err)
}
