"""The ``aichaos`` command line."""

from __future__ import annotations

from typing import Annotated

import typer

import aichaos
from aichaos.experiments.toxiproxy.cli import app as toxiproxy_app
from aichaos.fixtures.llm_sim.cli import app as sim_app
from aichaos.harness.calibrate_cli import calibrate_command
from aichaos.harness.chaos_cli import chaos, experiments_app
from aichaos.harness.error_handler import HandledGroup
from aichaos.harness.load_cli import register as register_load
from aichaos.harness.model_cli import app as model_app
from aichaos.harness.report_cli import report
from aichaos.harness.run_cli import run
from aichaos.harness.slo_cli import register as register_slo
from aichaos.harness.stack_cli import app as stack_app
from aichaos.harness.sweep_cli import sweep

app = typer.Typer(
    cls=HandledGroup,
    help="Game days for LLM/RAG serving stacks: load, faults and SLO verdicts in one run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# the simulator's own commands, plus calibrate: the toolkit drives a real engine to fit it
sim_app.command("calibrate")(calibrate_command)
app.add_typer(sim_app, name="sim")
app.add_typer(toxiproxy_app, name="toxiproxy")
app.add_typer(stack_app, name="stack")
app.add_typer(model_app, name="model")
register_slo(app)  # aichaos slo ..., aichaos compare
register_load(app)  # aichaos load ..., aichaos scenarios ..., aichaos worker
app.command("report")(report)
app.add_typer(experiments_app, name="experiments")
app.command("chaos")(chaos)
app.command("run")(run)
app.command("sweep")(sweep)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aichaos {aichaos.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """aichaos: prove an LLM/RAG serving stack keeps its SLOs under load and under faults."""


@app.command()
def demo(
    profile: Annotated[str, typer.Option(help="Simulator profile.")] = "llama-3.1-8b-h100",
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 40,
) -> None:
    """Start the LLM simulator and stream one completion from it."""
    from aichaos.harness.demo import run_demo

    raise typer.Exit(run_demo(profile, max_tokens))
