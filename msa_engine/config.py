"""TOML configuration files: ``[data]`` and ``[network]`` tables (README, "Config").

``load_config(path)`` returns a resolved :class:`Problem` plus the echo of the
resolved configuration that CLI outputs and sessions record.
"""

from __future__ import annotations

import tomllib
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import MSAError, MSAWarning
from .problem import Network, Problem, resolve_chi
from .tasks import make_data
from .theory.options import (DEFAULTS as THEORY_DEFAULTS, MONTE_CARLO, check_integer,
                             check_options)

NETWORK_KEYS = ("activation", "N", "g_w", "g_a", "kappa", "chi", "gamma")
TOP_LEVEL = ("data", "network", "simulation", "theory", "sweep")
DEFAULT_CONFIG = "default.toml"


@dataclass(frozen=True, eq=False)
class Config:
    problem: Problem
    raw: dict            # the parsed TOML
    resolved: dict       # echo: data spec + network with chi as a number
    path: str | None
    theory_seed: int | None = None   # [theory] seed: the default of --seed
    theory_options: dict | None = None   # the rest of [theory], validated (theory.options)


def network_from_dict(spec: dict) -> Network:
    if not isinstance(spec, dict):
        raise MSAError("[network] must be a table")
    unknown = set(spec) - set(NETWORK_KEYS)
    if unknown:
        raise MSAError(f"network: unknown key(s) {', '.join(sorted(unknown))}")
    N = check_integer("N", spec.get("N", 100), 1)
    return Network(activation=spec.get("activation", "linear"), N=N,
                   g_w=spec.get("g_w", 1.0), g_a=spec.get("g_a", 1.0),
                   kappa=spec.get("kappa", 0.1),
                   chi=resolve_chi(spec.get("chi"), spec.get("gamma"), N))


def theory_table(table: Any, activation: str = "linear") -> tuple[int | None, dict]:
    """``seed`` and the validated options of a config's ``[theory]`` table.

    The Monte Carlo knobs act on the non-linear tree level and one loop only; for a
    linear network they are accepted (a config may be copied between activations)
    with a warning that they change nothing.
    """
    if table is None:
        return None, {}
    if not isinstance(table, dict):
        raise MSAError("[theory] must be a table")
    unknown = sorted(set(table) - {"seed", *THEORY_DEFAULTS})
    if unknown:
        raise MSAError(f"theory: unknown key(s) {', '.join(unknown)} (known: seed, "
                       f"{', '.join(THEORY_DEFAULTS)})")
    rest = dict(table)
    seed = rest.pop("seed", None)
    if seed is not None:
        seed = check_integer("theory.seed", seed, 0)
    options = check_options(rest)
    idle = [k for k in options if k in MONTE_CARLO]
    if idle and activation == "linear":
        warnings.warn(f"theory.{', theory.'.join(idle)}: Monte Carlo options of the non-linear "
                      "tree and one loop; a linear network's theories are closed forms and "
                      "ignore them", MSAWarning, stacklevel=2)
    return seed, options


def config_from_dict(raw: dict, base_dir: Path | None = None, path: str | None = None) -> Config:
    """Resolve a parsed config dictionary into a :class:`Config`."""
    if not isinstance(raw, dict):
        raise MSAError("the config must be a TOML table")
    unknown = set(raw) - set(TOP_LEVEL)
    if unknown:
        raise MSAError(f"config: unknown table(s) {', '.join(sorted(unknown))}")
    net = network_from_dict(raw.get("network", {}))
    data = make_data(raw.get("data", {"task": "linear"}), base_dir)
    problem = Problem(data, net)
    seed, options = theory_table(raw.get("theory"), net.activation)
    resolved = {"data": dict(data.spec), "network": net.to_dict()}
    for key in ("simulation", "theory", "sweep"):
        if key in raw:
            resolved[key] = raw[key]
    return Config(problem, raw, resolved, path, seed, options)


def load_config(path: str | Path | None = None) -> Config:
    """Read a TOML config; ``None`` reads the bundled default config."""
    if path is None:
        text = resources.files("msa_engine.data").joinpath(DEFAULT_CONFIG).read_text()
        name, base = f"<bundled {DEFAULT_CONFIG}>", None
    else:
        p = Path(path).expanduser()
        try:
            # TOML is UTF-8; "-sig" drops the byte-order mark some Windows editors write
            # (it read as "Invalid statement (at line 1, column 1)")
            text = p.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise MSAError(f"no such config file {str(p)!r}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MSAError(f"cannot read config {str(p)!r}: {exc}") from None
        name, base = str(p), p.parent
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MSAError(f"{name}: TOML syntax error: {exc}") from None
    return config_from_dict(raw, base, name)


def bundled_config_path() -> str:
    return str(resources.files("msa_engine.data").joinpath(DEFAULT_CONFIG))
