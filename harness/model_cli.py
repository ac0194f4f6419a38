"""``aichaos model build``: the small model a real vLLM engine serves in the reference stack.

Exit codes (DESIGN): 0 built or reused; 3 no vLLM environment, or the build failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aichaos import exits

from .vllm_env import VllmUnavailable, build_model, model_cache

app = typer.Typer(
    help="The model the reference stack's vLLM replicas serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def build(
    out: Annotated[
        Path | None,
        typer.Option(help=f"Model directory (default: {model_cache()}/tiny-s<SEED>-<HASH>)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Build a small random-weight Llama model with its tokenizer (offline, seconds), print
    its directory. Its text is gibberish; the engine serving it is real."""
    try:
        path = build_model(out, seed)
    except VllmUnavailable as exc:
        typer.echo(f"aichaos model build: {exc}", err=True)
        raise typer.Exit(exits.NOT_COMPLETED) from None
    typer.echo(str(path))
