"""Prometheus metrics, read from the proxies' own counters when scraped.

Byte counts are plain integers bumped on the data path; a collector turns them into metric
families only when ``/metrics`` is asked, so an unscraped server pays nothing for them. The
byte counters keep Toxiproxy's names and labels, so its dashboards work unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .collection import ProxyCollection
from .toxics import DIRECTIONS

LABELS = ["direction", "proxy", "listener", "upstream"]


class ProxyCollector(Collector):
    def __init__(self, collection: ProxyCollection):
        self.collection = collection

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "toxiproxy_proxy_received_bytes",
            "Bytes the proxy read, per direction (upstream: from the client).",
            labels=LABELS,
        )
        sent = CounterMetricFamily(
            "toxiproxy_proxy_sent_bytes",
            "Bytes the proxy wrote, per direction (upstream: to the upstream server).",
            labels=LABELS,
        )
        accepted = CounterMetricFamily(
            "toxiproxy_proxy_connections", "Client connections accepted.", labels=["proxy"]
        )
        open_now = GaugeMetricFamily(
            "toxiproxy_proxy_connections_open", "Client connections open now.", labels=["proxy"]
        )
        toxics = GaugeMetricFamily(
            "toxiproxy_proxy_toxics_active",
            "Toxics configured on the proxy, per direction.",
            labels=["proxy", "direction"],
        )
        drawn = CounterMetricFamily(
            "toxiproxy_llm_toxic_requests",
            "Requests an LLM toxic drew for (its toxicity decides which it hits).",
            labels=["proxy", "toxic", "type"],
        )
        hit = CounterMetricFamily(
            "toxiproxy_llm_toxic_hits",
            "Requests an LLM toxic hit.",
            labels=["proxy", "toxic", "type"],
        )
        for proxy in list(self.collection.proxies.values()):
            for toxic in proxy.llm_toxics():
                drawn.add_metric([proxy.name, toxic.name, toxic.type], toxic.requests)
                hit.add_metric([proxy.name, toxic.name, toxic.type], toxic.hits)
            for direction in DIRECTIONS:
                labels = [direction, proxy.name, proxy.listen, proxy.upstream]
                received.add_metric(labels, proxy.stats[direction][0])
                sent.add_metric(labels, proxy.stats[direction][1])
                toxics.add_metric([proxy.name, direction], len(proxy.toxics[direction]))
            accepted.add_metric([proxy.name], proxy.accepted)
            open_now.add_metric([proxy.name], len(proxy.connections))
        tasks = GaugeMetricFamily(
            "toxiproxy_server_asyncio_tasks", "Asyncio tasks alive in the server process."
        )
        try:
            tasks.add_metric([], len(asyncio.all_tasks()))
        except RuntimeError:  # scraped outside the loop
            tasks.add_metric([], 0)
        yield from (received, sent, accepted, open_now, toxics, drawn, hit, tasks)


def make_registry(collection: ProxyCollection) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(collection))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
