"""The shape of a Prometheus exposition's ``vllm:`` families: type, label names, buckets.

What a dashboard or an SLO query depends on, without the values: the simulator's families are
compared with a real vLLM engine's by these shapes (tests/test_conformance.py,
tests/test_sim_metrics.py against the engine's saved /metrics).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Shape:
    type: str
    labels: tuple[str, ...]  # label names, sorted, ``le`` left out
    buckets: tuple[float, ...]  # a histogram's upper bounds, +Inf included; () otherwise

    def describe(self) -> str:
        text = f"{self.type} {{{', '.join(self.labels)}}}"
        if self.buckets:
            text += f" le={','.join(f'{b:g}' for b in self.buckets)}"
        return text


def metric_shapes(text: str) -> dict[str, Shape]:
    """``vllm:`` families by name; prometheus_client's ``_created`` gauges left out (both
    servers expose them, and no query reads them)."""
    shapes = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("vllm:") or fam.name.endswith("_created"):
            continue
        labels = sorted({k for s in fam.samples for k in s.labels if k != "le"})
        bounds = sorted(
            {float(s.labels["le"]) for s in fam.samples if s.name == f"{fam.name}_bucket"}
        )
        shapes[fam.name] = Shape(fam.type, tuple(labels), tuple(bounds))
    return shapes
