package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/annshard/annshard/hack/localcluster/agent"
	"github.com/annshard/annshard/hack/localcluster/cluster"
	"github.com/annshard/annshard/hack/localcluster/podinit"
)

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	if os.Args[1] == "init" {
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: localcluster init SPEC")
			os.Exit(2)
		}
		// Only returns on failure; the agent reads the reason from podinit.ErrorFD.
		err := podinit.Main(os.Args[2])
		fmt.Fprintln(os.Stderr, "localcluster init:", err)
		os.Exit(127)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1], os.Args[2:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, `usage: localcluster up|down|status|logs POD [-c CONTAINER] [-n NAMESPACE] [-f]
run 'localcluster CMD -h' for the flags of a command`)
}

// imageFlags collects repeated --image repo=path flags.
type imageFlags map[string]string

func (f imageFlags) String() string {
	parts := make([]string, 0, len(f))
	for k, v := range f {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (f imageFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" || v == "" {
		return fmt.Errorf("want REPOSITORY=PATH, got %q", s)
	}
	abs, err := filepath.Abs(v)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", v, err)
	}
	f[k] = abs
	return nil
}

func run(ctx context.Context, cmd string, args []string, out io.Writer) error {
	root := repoRoot()
	def := cluster.Defaults(root)
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	stateDir := fs.String("state-dir", def.StateDir, "directory for all cluster state")
	switch cmd {
	case "up":
		c := def
		fs.StringVar(&c.K8sBinDir, "k8s-bin-dir", def.K8sBinDir, "directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
		fs.IntVar(&c.EtcdPort, "etcd-port", def.EtcdPort, "etcd client port (peer and metrics use the next +10 and +20)")
		fs.IntVar(&c.APIServerPort, "apiserver-port", def.APIServerPort, "kube-apiserver secure port")
		fs.IntVar(&c.ControllerManagerPort, "controller-manager-port", def.ControllerManagerPort, "kube-controller-manager secure port")
		fs.IntVar(&c.SchedulerPort, "scheduler-port", def.SchedulerPort, "kube-scheduler secure port")
		fs.StringVar(&c.PodCIDR, "pod-cidr", def.PodCIDR, "loopback range for pod IPs")
		fs.StringVar(&c.NodeName, "node-name", def.NodeName, "name of the node the agent registers")
		images := imageFlags(def.Images)
		fs.Var(images, "image", "map an image repository to a local binary, REPOSITORY=PATH (repeatable)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		abs, err := filepath.Abs(*stateDir)
		if err != nil {
			return fmt.Errorf("resolving state dir: %w", err)
		}
		c.StateDir, c.Images = abs, images
		return cluster.Up(ctx, c, out)
	case "down", "status", "agent":
		if err := fs.Parse(args); err != nil {
			return err
		}
		c, err := cluster.Load(*stateDir)
		if err != nil {
			if cmd == "down" && errors.Is(err, cluster.ErrNoCluster) {
				fmt.Fprintln(out, "no local cluster to stop")
				return nil
			}
			return err
		}
		switch cmd {
		case "down":
			if err := cluster.Down(c, out); err != nil {
				return err
			}
			fmt.Fprintln(out, "local cluster down")
			return nil
		case "status":
			return cluster.Status(ctx, c, out)
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		return agent.Run(ctx, c, log)
	case "logs":
		container := fs.String("c", "", "container name (needed when the pod has several)")
		namespace := fs.String("n", "default", "namespace")
		follow := fs.Bool("f", false, "keep printing as the log grows")
		pos, err := parseInterspersed(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return errors.New("usage: localcluster logs POD [-c CONTAINER] [-n NAMESPACE] [-f]")
		}
		c, err := cluster.Load(*stateDir)
		if err != nil {
			return err
		}
		return logs(ctx, c, *namespace, pos[0], *container, *follow, out)
	case "-h", "--help", "help":
		usage(out)
		return nil
	}
	usage(os.Stderr)
	return fmt.Errorf("unknown command %q", cmd)
}

// parseInterspersed lets flags follow positional arguments (`logs POD -c x`).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// logs prints a container's log file; without -c the pod must have exactly one.
func logs(ctx context.Context, c cluster.Config, ns, pod, container string, follow bool, out io.Writer) error {
	path := c.PodLogPath(ns, pod, container)
	if container == "" {
		matches, _ := filepath.Glob(filepath.Join(c.PodLogDir(), ns+"_"+pod+"_*.log"))
		switch len(matches) {
		case 0:
			return fmt.Errorf("no logs for pod %s/%s", ns, pod)
		case 1:
			path = matches[0]
		default:
			var names []string
			for _, m := range matches {
				names = append(names, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), ns+"_"+pod+"_"), ".log"))
			}
			return fmt.Errorf("pod %s/%s has several containers, pick one with -c: %s", ns, pod, strings.Join(names, ", "))
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for {
		if _, err := io.Copy(out, r); err != nil {
			return fmt.Errorf("reading log: %w", err)
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// repoRoot is the nearest directory upwards holding go.mod, else the working dir.
func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return wd
		}
	}
}
