"""The ``restlit`` command line (a typer app, see ``cli.main``)."""
