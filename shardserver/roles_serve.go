package main

// The serve role registers itself here once shardserver/shard exists:
//
//	func init() { roles["serve"] = shard.Main }
