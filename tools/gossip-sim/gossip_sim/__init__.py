"""The gossip simulator: haflowd's membership core for many nodes in virtual time (see simulator.py)."""
