"""The one error handler of the command line: an ``AichaosError`` raised anywhere below a
command is its one line on stderr and its exit code (``aichaos.errors``). The root command
uses it, and so does every command line a child process runs on its own (the detached stack
supervisor)."""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

from aichaos.errors import AichaosError


class HandledGroup(TyperGroup):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AichaosError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
