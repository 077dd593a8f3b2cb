"""The ``restlit`` command line (a typer app, see ``restlit.cli.main``)."""
