"""The Typer application every command module registers on (``@app.command()`` or ``app.add_typer``)."""
from __future__ import annotations

import typer

app = typer.Typer(
    name="stablernn",
    help="Stable training of recurrent, spiking and state-space networks: LSC pre-training, stable surrogate "
    "gradients, diagnostics, sweeps and reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command and sub-group
)
