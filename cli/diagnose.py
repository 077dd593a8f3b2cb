"""``restlit diagnose``: measurements that help decide before paying for a run."""

from __future__ import annotations

import typer

app = typer.Typer(help="Diagnostics: `restlit diagnose variance` measures the policy-gradient variance per weighting.",
                  no_args_is_help=True)
