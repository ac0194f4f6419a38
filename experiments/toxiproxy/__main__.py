"""``python -m aichaos.experiments.toxiproxy serve ...``"""

from .cli import app

app(prog_name="python -m aichaos.experiments.toxiproxy")
