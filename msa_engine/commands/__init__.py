"""Subcommands of the ``msa`` CLI, one module each (see :mod:`msa_engine.cli`)."""
