package main

import "github.com/annshard/annshard/shardserver/router"

func init() { roles["route"] = router.Main }
