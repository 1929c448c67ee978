// Command shardserver is annshard's data plane: `shardserver serve` runs one replica of
// one shard, `shardserver route` runs a query router.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/annshard/annshard/shardserver/router"
	"github.com/annshard/annshard/shardserver/shard"
)

const usage = `usage: shardserver <command> [flags]

commands:
  serve   run one replica of one shard (HNSW + WAL + replication)
  route   run a query router in front of the shards

Run "shardserver <command> -h" for the flags of a command.
`

// roles maps a subcommand to its entry point; each parses its own flags.
var roles = map[string]func(ctx context.Context, args []string) error{
	"serve": shard.Main,
	"route": router.Main,
}

func main() {
	if len(os.Args) < 2 || roles[os.Args[1]] == nil {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := roles[os.Args[1]](ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "shardserver %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
