package main

import "github.com/annshard/annshard/shardserver/shard"

func init() { roles["serve"] = shard.Main }
