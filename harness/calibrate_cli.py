"""``aichaos sim calibrate``: fit a simulator profile to a real engine (see ``calibration``).

Exit codes (DESIGN): 0 profile written; 2 bad option; 3 the engine could not be measured.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from aichaos.errors import NotCompleted
from aichaos.rundir import InputError

from .calibration import (
    CPU_MAX_NUM_BATCHED_TOKENS,
    CPU_MAX_NUM_SEQS,
    FULL,
    QUICK,
    Point,
    calibrate,
    engine_facts,
    to_profile,
    write_profile,
)
from .urls import check_url, unreachable


def _show(point: Point) -> None:
    typer.echo(
        f"  {point.kind:11} concurrency {point.concurrency:3}  prompt {point.prompt_tokens:6.0f}"
        f"  output {point.output_tokens:6.1f}  TTFT p50 {point.ttft_p50_s * 1e3:8.2f} ms"
        f"  TPOT p50 {point.tpot_p50_s * 1e3:7.2f} ms  ({point.requests} requests,"
        f" {point.errors} errors, {point.bursts} burst)"
    )


def calibrate_command(
    target: Annotated[str, typer.Option(help="Base URL of the engine (vLLM's OpenAI API).")],
    out: Annotated[Path, typer.Option(help="Profile to write (.yaml).")],
    model: Annotated[
        str | None, typer.Option(help="Model to ask for (default: the first it serves).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Profile name (default: OUT's stem).")] = None,
    max_num_seqs: Annotated[
        int, typer.Option(min=1, help="The engine's --max-num-seqs (vLLM does not publish it).")
    ] = CPU_MAX_NUM_SEQS,
    max_num_batched_tokens: Annotated[
        int, typer.Option(min=1, help="The engine's --max-num-batched-tokens.")
    ] = CPU_MAX_NUM_BATCHED_TOKENS,
    quick: Annotated[
        bool, typer.Option(help="Fewer, shorter load points (about 1 minute instead of 4).")
    ] = False,
    work_dir: Annotated[
        Path | None,
        typer.Option(help="Keep each load point's run directory here (default: discarded)."),
    ] = None,
) -> None:
    """Drive an engine through a prompt-length sweep and a concurrency sweep, fit the
    simulator's step-time model and KV pool to it, and write a profile for
    ``aichaos sim serve --profile OUT``."""
    profile_name = name or out.stem
    url = check_url("--target", target)
    if out.suffix not in (".yaml", ".yml"):
        raise InputError("command line", "--out", "a .yaml or .yml file", str(out))
    if not out.parent.is_dir():
        raise InputError("command line", "--out", "a file in an existing directory", str(out))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", profile_name):
        raise InputError("command line", "--name", "letters, digits, '.', '_', '-'", profile_name)
    why = unreachable(url)
    if why is not None:
        raise NotCompleted(f"target {url} unreachable: {why}")
    facts = engine_facts(url, model)
    pool = (f"{facts.num_gpu_blocks} KV blocks of {facts.block_size} tokens"
            if facts.num_gpu_blocks else "no published KV pool")  # fmt: skip
    typer.echo(f"calibrating {facts.model} at {url}: max_model_len {facts.max_model_len}, "
               f"{pool}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="aichaos-calibrate-") as tmp:
        folder = work_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        cal = calibrate(facts, QUICK if quick else FULL, folder, max_num_seqs,
                        max_num_batched_tokens, on_point=_show)  # fmt: skip
    for note in cal.notes:
        typer.echo(f"note: {note}")
    f = cal.fit
    typer.echo(
        f"fit: c0 {f.c0 * 1e3:.3f} ms, c_prefill {f.c_prefill * 1e6:.2f} us/token, c_decode "
        f"{f.c_decode * 1e6:.1f} us/seq, c_kv {f.c_kv * 1e9:.2f} ns/token, extra TTFT "
        f"{f.extra * 1e3:.2f} ms; median error {f.median_error:.1%}, worst {f.max_error:.1%}"
    )
    write_profile(to_profile(cal, profile_name), out, cal)
    typer.echo(f"wrote {out}")
