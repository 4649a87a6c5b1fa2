"""Prometheus metrics at /metrics (docs/design.md, "What a user sees").

One CollectorRegistry per node, never the process-global one: tests and simulations run several
nodes in one process, and each must report only itself. A custom collector reads the node's live
state when scraped, so no counter is kept twice; the replica's counts are async, so the handler
loads them just before it renders.
"""
from __future__ import annotations

import time
from typing import Any, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol import VERDICTS

from node import VERSION
from node.net.api import NODE
from node.telemetry import Counter, vote_counter

PREFIX = "ralphswarm"
REGISTRY: web.AppKey["NodeCollector"] = web.AppKey("metrics", object)
# result label -> the counter the own loops fill (node/telemetry.py); absent counters read as 0.
EXPERIMENT_COUNTERS = {"run": Counter.EXPERIMENTS_RUN, "kept": Counter.EXPERIMENTS_KEPT,
                       "crashed": Counter.EXPERIMENTS_CRASHED}


class NodeCollector(Collector):
    def __init__(self, node: Any):
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._db: dict[str, dict[str, int]] = {"messages": {}, "votes": {}}

    async def refresh(self) -> None:
        """Load what lives in the replica (async) so that collect() can stay synchronous."""
        replica = self.node.replica
        self._db = {"messages": await replica.counts(), "votes": await replica.votes_by_verdict()}

    async def render(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        node = self.node
        counters = node.telemetry.counters
        yield _info(node)

        messages = GaugeMetricFamily(f"{PREFIX}_messages", "Messages in the replica, by kind", labels=["kind"])
        for kind, n in sorted(self._db["messages"].items()):
            messages.add_metric([kind], n)
        yield messages
        votes = GaugeMetricFamily(f"{PREFIX}_votes", "Votes in the replica, by verdict", labels=["verdict"])
        stored = self._db["votes"]
        for verdict in sorted(set(VERDICTS) | set(stored)):
            votes.add_metric([verdict], stored.get(verdict, 0))
        yield votes

        stats = node.gossip.stats
        ingest = CounterMetricFamily(f"{PREFIX}_ingest_messages", "Messages offered to ingest, by result",
                                     labels=["result"])
        for result in ("accepted", "duplicate", "rejected"):
            ingest.add_metric([result], getattr(stats, result))
        yield ingest
        rejected = CounterMetricFamily(f"{PREFIX}_ingest_rejected", "Rejected messages, by reason",
                                       labels=["reason"])
        for reason, n in sorted(stats.rejected_by_reason.items()):
            rejected.add_metric([reason], n)
        yield rejected
        gossip = CounterMetricFamily(f"{PREFIX}_gossip_events", "Gossip work: ids announced, envelopes "
                                     "sent and fetched, reconciliations and their rounds", labels=["event"])
        for event in ("announced", "sent", "fetched", "syncs", "sync_rounds"):
            gossip.add_metric([event], getattr(stats, event))
        yield gossip
        catchup = node.gossip.catchup_json() or {}
        progress = GaugeMetricFamily(f"{PREFIX}_catchup_messages", "The current or last catch-up: missing "
                                     "messages learned, stored, given up, still to fetch", labels=["state"])
        for state in ("wanted", "stored", "failed", "remaining"):
            progress.add_metric([state], catchup.get(state, 0))
        yield progress
        yield GaugeMetricFamily(f"{PREFIX}_catchup_active", "1 while a catch-up is fetching",
                                value=1 if catchup.get("active") else 0)
        if node.newcomers is not None:  # the disk budget and the budgets of keys without trust (node/newcomers.py)
            disk = node.newcomers.to_json()
            size = GaugeMetricFamily(f"{PREFIX}_replica_bytes", "The replica's bytes: used (data pages), budget "
                                     "(--max-db-mb), newcomers (keys without trust, estimated) and their budget, "
                                     "file and wal", labels=["part"])
            for part, key in (("used", "used_bytes"), ("budget", "budget_bytes"), ("newcomers", "newcomer_bytes"),
                              ("newcomer_budget", "newcomer_budget_bytes"), ("file", "file_bytes"), ("wal", "wal_bytes")):
                size.add_metric([part], disk[key])
            yield size
            yield CounterMetricFamily(f"{PREFIX}_shed_messages", "Messages shed to stay within the budgets (keys "
                                      "without trust, oldest first)", value=disk["shed"])
            yield CounterMetricFamily(f"{PREFIX}_shed_expired_messages", "Of the shed messages, those shed for age",
                                      value=disk["expired"])
            refused = CounterMetricFamily(f"{PREFIX}_newcomer_refused", "Pushed messages of keys without trust "
                                          "refused, by budget", labels=["budget"])
            for budget, n in sorted(disk["refused_by_budget"].items()):
                refused.add_metric([budget], n)
            yield refused
            yield CounterMetricFamily(f"{PREFIX}_newcomer_prescreened", "Of the refused, those refused before "
                                      "their signatures were checked (a budget already spent)",
                                      value=disk.get("prescreened", 0))
            yield CounterMetricFamily(f"{PREFIX}_newcomer_withheld", "Messages of keys without trust stored but "
                                      "not relayed (no trusted vote touched them)", value=disk["withheld"])
        traffic = node.stats_json()
        yield CounterMetricFamily(f"{PREFIX}_gossip_received_bytes", "Bytes received (requests served and "
                                  "answers read)", value=traffic["bytes_received"])
        yield CounterMetricFamily(f"{PREFIX}_gossip_sent_bytes", "Bytes sent in requests to peers",
                                  value=traffic["bytes_sent"])
        events = CounterMetricFamily(f"{PREFIX}_http_events", "HTTP events (rate limited, ...)", labels=["event"])
        for event, n in sorted(node.telemetry.events.items()):
            events.add_metric([event], n)
        yield events

        now = time.time()
        everyone = node.peers.all()
        active = len(node.peers.active(now))
        peers = GaugeMetricFamily(f"{PREFIX}_peers", "Known peers, by state", labels=["state"])
        peers.add_metric(["active"], active)
        peers.add_metric(["cooling"], len(everyone) - active)
        yield peers

        experiments = CounterMetricFamily(f"{PREFIX}_experiments", "Own experiments, by result", labels=["result"])
        for label, name in EXPERIMENT_COUNTERS.items():
            experiments.add_metric([label], counters.get(name, 0))
        yield experiments
        yield CounterMetricFamily(f"{PREFIX}_reproductions", "Reproductions of others' claims run",
                                  value=counters.get(Counter.REPRODUCTIONS_RUN, 0))
        cast = CounterMetricFamily(f"{PREFIX}_votes_cast", "Votes this node published, by verdict",
                                   labels=["verdict"])
        for verdict in VERDICTS:
            cast.add_metric([verdict], counters.get(vote_counter(verdict), 0))
        yield cast
        share = node.slots.share("reproduce") if node.slots is not None else 0.0
        yield GaugeMetricFamily(f"{PREFIX}_reproduction_share", "Share of busy device time spent reproducing",
                                value=share)

        tokens = CounterMetricFamily(f"{PREFIX}_proposer_tokens", "LLM proposer tokens", labels=["direction"])
        for direction, counter in (("input", Counter.PROPOSER_INPUT_TOKENS), ("output", Counter.PROPOSER_OUTPUT_TOKENS),
                                   ("cache_read", Counter.PROPOSER_CACHE_READ_TOKENS),
                                   ("cache_write", Counter.PROPOSER_CACHE_WRITE_TOKENS)):
            tokens.add_metric([direction], counters.get(counter, 0))
        yield tokens
        yield CounterMetricFamily(f"{PREFIX}_proposer_cost_usd", "LLM proposer spend in US dollars",
                                  value=counters.get(Counter.PROPOSER_COST_USD, 0))


def _info(node: Any) -> Metric:

    info = GaugeMetricFamily(f"{PREFIX}_node_info", "This node: key, swarm, version",
                             labels=["pubkey", "swarm", "version"])
    info.add_metric([node.identity.pubkey, node.swarm, VERSION], 1)
    return info


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[REGISTRY].render()
    # Our names and labels are plain ASCII, so the output is valid text format 0.0.4, which every
    # Prometheus server reads (the library's default content type, 1.0.0, needs a recent one).
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def add_routes(app: web.Application) -> None:
    app[REGISTRY] = NodeCollector(app[NODE])
    app.router.add_get("/metrics", metrics)
