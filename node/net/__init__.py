"""The node's network: wire API, transports, swarm key, rate limits, peers, gossip, negentropy, LAN discovery."""
