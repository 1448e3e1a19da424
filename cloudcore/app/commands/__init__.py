"""Subcommands of the ``cloudcore`` command line, one module each."""
