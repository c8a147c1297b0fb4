"""The engine never imports the TUI or textual (harlequin-style isolation test)."""

import pkgutil
import subprocess
import sys

import pytest

import msa_engine

ENGINE_MODULES = sorted(
    m.name for m in pkgutil.walk_packages(msa_engine.__path__, "msa_engine.")
    if not m.name.endswith("__main__"))

CHECK = ("import importlib, sys\n"
         "importlib.import_module(sys.argv[1])\n"
         "leaked = [m for m in ('textual', 'msa_tui') if m in sys.modules]\n"
         "print(leaked)\n"
         "sys.exit(1 if leaked else 0)\n")


def test_engine_module_list_is_complete():
    assert "msa_engine.theory.linear" in ENGINE_MODULES
    assert "msa_engine.cli" in ENGINE_MODULES
    assert len(ENGINE_MODULES) >= 10


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_engine_module_does_not_import_textual(module):
    out = subprocess.run([sys.executable, "-c", CHECK, module], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"{module} imported {out.stdout.strip()} {out.stderr[-2000:]}"


def test_cli_parser_does_not_import_textual():
    code = ("import sys\nfrom msa_engine.cli import build_parser\nbuild_parser()\n"
            "sys.exit(1 if 'textual' in sys.modules else 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


def test_the_check_itself_detects_textual():
    # the check has power: a module that does import textual is caught
    out = subprocess.run([sys.executable, "-c", CHECK, "textual.app"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1
