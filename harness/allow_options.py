"""The command-line flags that widen the blast-radius policy, shared by ``aichaos
experiments validate``, ``aichaos chaos`` and ``aichaos run`` so the three accept the same
experiments (``aichaos.experiments.policy``)."""

from __future__ import annotations

from typing import Annotated

import typer

from aichaos.experiments.policy import NOT_EXTENSIONS, Permissions
from aichaos.rundir import InputError

Allow = Annotated[
    list[str] | None,
    typer.Option(
        "--allow",
        help="A Kubernetes namespace or real-Toxiproxy proxy the experiment may touch too.",
    ),
]
AllowExtension = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-extension",
        help="A Chaos Toolkit extension (module) whose activities and controls may run.",
    ),
]
AllowProcess = Annotated[
    bool,
    typer.Option("--allow-process", help="Let process providers run commands on this machine."),
]
AllowHttp = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-http", help="A HOST or HOST:PORT http providers may call besides the stack."
    ),
]


def permissions(
    allow: list[str] | None,
    extensions: list[str] | None,
    process: bool,
    http_hosts: list[str] | None,
) -> Permissions:
    """The permissions the flags give; ``InputError`` for an extension that is not one."""
    for name in extensions or ():
        if name.split(".")[0] in NOT_EXTENSIONS:
            expected = "a Chaos Toolkit extension (aichaos's own activities need no flag)"
            raise InputError("command line", "--allow-extension", expected, name)
    return Permissions(
        targets=tuple(allow or ()),
        extensions=tuple(extensions or ()),
        process=process,
        http_hosts=tuple(http_hosts or ()),
    )
