"""Prometheus for a local stack: found on PATH, configured to scrape the topology's targets,
run by the supervisor as one more service."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from .topology import PrometheusSpec

SERVICE_NAME = "prometheus"
READY_PATH = "/-/ready"


def find_binary(explicit: str | None = None) -> str | None:
    """The ``prometheus`` executable: ``explicit`` if given, else the one on PATH."""
    return shutil.which(explicit or "prometheus")


def scrape_config(spec: PrometheusSpec, targets: dict[str, list[tuple[str, int]]]) -> str:
    """A Prometheus configuration: one job per target service, one target per instance
    (``targets`` maps a service to its ``(instance name, port)`` pairs)."""
    jobs = []
    for service, instances in targets.items():
        jobs.append(
            {
                "job_name": service,
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"], "labels": {"service": name}}
                    for name, port in instances
                ],
            }
        )
    config = {
        "global": {
            "scrape_interval": spec.scrape_interval,
            # a timeout longer than the interval is a configuration error in Prometheus
            "scrape_timeout": spec.scrape_interval,
            "evaluation_interval": spec.scrape_interval,
        },
        "scrape_configs": jobs,
    }
    return yaml.safe_dump(config, sort_keys=False)


def command(binary: str, config: Path, run_dir: Path) -> list[str]:
    """The command line as a topology command: ``{port}`` is left for the supervisor to fill
    in, braces in paths are doubled so they stay literal."""
    return [
        _literal(binary),
        f"--config.file={_literal(str(config))}",
        "--web.listen-address=127.0.0.1:{port}",
        f"--storage.tsdb.path={_literal(str(run_dir / 'prometheus'))}",
    ]


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")
