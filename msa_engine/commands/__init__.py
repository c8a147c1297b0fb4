"""Subcommands of the ``msa`` CLI, one module each (see :mod:`msa_engine.cli`)."""

import argparse


def chi_arg(text: str):
    """``--chi`` of one value: a number, or ``N``/``mean-field`` (returned as ``"N"``)."""
    from ..sweep import parse_chis
    try:
        [value] = parse_chis(text)
    except Exception as exc:     # argparse turns the raise into its one-line error
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--chi: ")) from None
    return value
