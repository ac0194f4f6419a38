"""``aichaos toxiproxy serve`` (or ``python -m aichaos.experiments.toxiproxy.cli serve``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from aichaos import exits
from aichaos.documents import read_document
from aichaos.fixtures.aio import run_loop
from aichaos.rundir import InputError

from .errors import ApiError
from .spec import ProxySpec, SpecError, parse_spec_list

app = typer.Typer(
    help="A Toxiproxy-compatible fault proxy (Toxiproxy 2.x HTTP API and toxics).",
    no_args_is_help=True,
)


@app.callback()
def main() -> None:
    """A Toxiproxy-compatible fault proxy (Toxiproxy 2.x HTTP API and toxics)."""


def load_config(path: Path) -> list[ProxySpec]:
    """Proxies from a Toxiproxy config file (a JSON array, as ``/populate`` takes);
    ``InputError`` for an unreadable file, ``SpecError`` for a bad proxy."""
    return parse_spec_list(read_document(path))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="API port (0: a free one, printed).")
    ] = 8474,
    config: Annotated[
        Path | None, typer.Option(help="JSON array of proxies to create at start-up.")
    ] = None,
    metrics: Annotated[bool, typer.Option("--metrics", help="Serve /metrics.")] = False,
) -> None:
    """Serve Toxiproxy's HTTP API; proxies and toxics are created through it."""
    specs: list[ProxySpec] = []
    if config is not None:
        try:
            specs = load_config(config)
        except SpecError as exc:
            typer.echo(f"error: {config}: {exc.line()}", err=True)
            raise typer.Exit(exits.BAD_INPUT) from None
        except InputError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exits.BAD_INPUT) from None
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    from .server import serve as run_server

    try:
        code = run_loop(run_server(host, port, specs, metrics))
    except ApiError as exc:  # a proxy from --config could not listen
        typer.echo(f"error: {config}: {exc.message}", err=True)
        raise typer.Exit(exits.NOT_COMPLETED) from None
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(exits.NOT_COMPLETED) from None
    sys.exit(code)


if __name__ == "__main__":
    app()
