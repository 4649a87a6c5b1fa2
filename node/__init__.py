"""The daemon: HTTP API, gossip, reconciliation, discovery, scheduler, dashboard, CLI."""
