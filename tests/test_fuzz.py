"""Property tests (issue 8, "Fuzzing"): the config and data loaders, the session
loader and the solvers never raise anything but :class:`MSAError` and never return NaN.

The default profile is deterministic and fast (``derandomize=True``, bounded
``max_examples``, no deadline) so that CI always runs the same cases.  A longer,
randomised run: ``HYPOTHESIS_PROFILE=long pytest tests/test_fuzz.py
--hypothesis-show-statistics`` (40× the examples); its count and outcome are
recorded in the README's "Reliability" table.

Warnings are errors here for ``RuntimeWarning`` raised inside the engine (see
``pyproject.toml``), so an overflow that the engine does not handle also fails.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import msa_engine as msa
from msa_engine.config import config_from_dict, load_config
from msa_engine.sessions import Session, load_session, save_session
from msa_engine.sweep import run_sweep

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
SCALE = {"ci": 1, "long": 40}.get(PROFILE, 1)


def fuzz(n: int):
    """Settings for a property test with ``n`` examples in CI (× SCALE when long)."""
    return settings(max_examples=n * SCALE, derandomize=PROFILE != "long", deadline=None,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


WORK = Path(tempfile.mkdtemp(prefix="msa-fuzz-"))


def quiet(fn, *args, **kwargs):
    """Call ``fn`` with MSAWarnings silenced (they are advice, not failures)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", msa.MSAWarning)
        return fn(*args, **kwargs)


# --------------------------------------------------------------------------- values
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-3, 40), st.sampled_from([10 ** 12, 2 ** 63, -2 ** 63, 10 ** 400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["linear", "erf", "relu", "tanh", "ising", "hermite", "xor", "npz", "csv",
                     "standard", "mean-field", "N", "", "1e3", "nan", "-1"]),
    st.text(max_size=8),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.text(max_size=4), scalars, max_size=2))

DATA_KEYS = ["task", "d", "P", "P_test", "seed", "sigma", "p", "J", "sweeps", "a1", "a3", "mu",
             "standardize", "path", "test_path", "target", "test_fraction", "bogus"]
NET_KEYS = ["activation", "N", "g_w", "g_a", "kappa", "chi", "gamma", "bogus"]


def _table(keys):
    # "sweeps" only ever gets small values: a huge Metropolis sweep count is slow, not wrong
    return st.dictionaries(st.sampled_from(keys), values, max_size=6).map(
        lambda d: {k: (v if k != "sweeps" or not isinstance(v, int) or v < 50 else 3)
                   for k, v in d.items()})


configs = st.fixed_dictionaries({}, optional={
    "data": st.one_of(_table(DATA_KEYS), values),
    "network": st.one_of(_table(NET_KEYS), values),
    "simulation": values,
    "bogus": values,
})


def _check_problem(problem):
    d = problem.data
    for arr in (d.X_train, d.y_train, d.X_test, d.y_test):
        assert arr.size and np.all(np.isfinite(arr))
    assert d.X_train.shape[1] == d.X_test.shape[1]
    assert d.X_train.shape[0] == d.y_train.shape[0] and d.X_test.shape[0] == d.y_test.shape[0]
    net = problem.network
    assert net.N >= 1 and min(net.g_w, net.g_a, net.kappa, net.chi) > 0
    assert all(math.isfinite(v) for v in (net.g_w, net.g_a, net.kappa, net.chi))


@fuzz(150)
@given(configs)
@example({"data": {"task": "linear", "d": 10 ** 12}})
@example({"network": {"N": 2 ** 63}})
@example({"data": {"task": "xor", "d": 1}})
@example({"data": {"task": "ising", "p": 1.0, "J": 0.5}})
def test_config_dicts_give_a_problem_or_msa_error(raw):
    try:
        cfg = quiet(config_from_dict, raw, WORK)
    except msa.MSAError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    _check_problem(cfg.problem)


@fuzz(100)
@given(st.text(max_size=200))
@example("[network]\nkappa = nan\n")
@example("[data]\ntask = 'linear'\nd = 1e999\n")
def test_toml_text_gives_a_config_or_msa_error(text):
    path = WORK / "fuzz.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = quiet(load_config, path)
    except msa.MSAError as exc:
        assert "\n" not in str(exc).strip()
        return
    _check_problem(cfg.problem)


# --------------------------------------------------------------------------- data files
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
dtypes = st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex128])


@st.composite
def arrays(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    dtype = draw(dtypes)
    if dtype is np.complex128:
        elems = st.complex_numbers(allow_nan=True, allow_infinity=True)
    elif dtype is np.float32:
        elems = st.floats(width=32, allow_nan=True, allow_infinity=True)
    elif dtype is np.bool_:
        elems = st.booleans()
    elif dtype is np.int64:
        elems = st.integers(-10, 10)
    else:
        elems = floats
    return draw(hnp.arrays(dtype, shape, elements=elems))


@st.composite
def npz_contents(draw):
    """Four arrays of consistent or inconsistent shapes, some missing, some extra."""
    P, Pt, d = draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(0, 4))
    good = st.floats(-1e3, 1e3)
    out = {"X_train": draw(hnp.arrays(np.float64, (P, d), elements=good)),
           "y_train": draw(hnp.arrays(np.float64, (P,), elements=good)),
           "X_test": draw(hnp.arrays(np.float64, (Pt, d), elements=good)),
           "y_test": draw(hnp.arrays(np.float64, (Pt,), elements=good))}
    for key in draw(st.lists(st.sampled_from(sorted(out) + ["teacher"]), max_size=3)):
        out[key] = draw(arrays())                  # replace by anything (NaN, shapes, dtypes)
    for key in draw(st.lists(st.sampled_from(sorted(out)), max_size=1)):
        out.pop(key, None)
    return out


@fuzz(150)
@given(npz_contents())
def test_npz_files_give_data_or_msa_error(contents):
    path = WORK / "fuzz.npz"
    np.savez(path, **contents)
    try:
        data = quiet(msa.make_data, {"task": "npz", "path": str(path)})
    except msa.MSAError:
        return
    _check_problem(msa.Problem(data, msa.Network()))


cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.integers(-5, 5).map(str),
                  st.sampled_from(["", "nan", "inf", "-inf", "1e400", "abc", "x", "y", " 1 ",
                                   '"', "1,2"]))
csv_text = st.lists(st.lists(cells, min_size=0, max_size=4).map(",".join), max_size=8).map(
    "\n".join)


@fuzz(150)
@given(csv_text, st.one_of(st.none(), csv_text), st.one_of(st.none(), st.floats(-1, 2)),
       st.one_of(st.none(), st.sampled_from(["x", "y", "z"])))
def test_csv_files_give_data_or_msa_error(train, test, fraction, target):
    spec = {"task": "csv", "path": str(WORK / "fuzz.csv")}
    (WORK / "fuzz.csv").write_text(train)
    if test is not None:
        (WORK / "fuzz-test.csv").write_text(test)
        spec["test_path"] = str(WORK / "fuzz-test.csv")
    if fraction is not None:
        spec["test_fraction"] = fraction
    if target is not None:
        spec["target"] = target
    try:
        data = quiet(msa.make_data, spec)
    except msa.MSAError:
        return
    _check_problem(msa.Problem(data, msa.Network()))


@fuzz(150)
@given(arrays(), arrays(), arrays(), arrays(), st.one_of(st.none(), arrays()))
def test_data_constructor_validates_any_arrays(X, y, Xs, ys, teacher):
    try:
        data = msa.Data(X, y, Xs, ys, teacher=teacher)
    except msa.MSAError:
        return
    _check_problem(msa.Problem(data, msa.Network()))


# --------------------------------------------------------------------------- sessions
@functools.lru_cache(maxsize=1)
def session_text() -> str:
    cfg = config_from_dict({"data": {"task": "linear", "d": 4, "P": 6, "P_test": 3, "seed": 1},
                            "network": {"N": 10, "kappa": 0.1}})
    s = Session.new(cfg.resolved, name="fuzz")
    run_sweep(s, [1.0, 3.0], theories=["nngp", "tree"], autosave=False)
    return save_session(s, WORK / "base.json").read_text()


def _use(path: Path) -> None:
    """Load a session and use it as replay does; only MSAError may escape."""
    s = load_session(path)
    s.problem()
    s.sweep_rows()
    for e in s.entries:
        s.problem(chi=e["chi"], N=e["N"])


def _load_or_msa_error(path: Path) -> None:
    try:
        _use(path)
    except msa.MSAError as exc:
        assert "\n" not in str(exc)


@fuzz(100)
@given(st.data())
def test_truncated_or_corrupted_session_files(data):
    raw = session_text().encode()
    kind = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif kind == "flip":
        raw = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
        raw = bytes(raw)
    else:
        raw = data.draw(st.binary(max_size=300))
    path = WORK / "fuzz-session.json"
    path.write_bytes(raw)
    _load_or_msa_error(path)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 6), st.text(max_size=5),
              st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)


def _paths(obj, prefix=()):
    """Every path into a JSON document (keys and list indices)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield from _paths(v, prefix + (i,))


@fuzz(200)
@given(st.data())
def test_wrong_types_in_session_fields(data):
    doc = json.loads(session_text())
    paths = [p for p in _paths(doc) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        target = doc
        try:
            for key in path[:-1]:
                target = target[key]
            if data.draw(st.booleans(), label="delete") and isinstance(target, dict):
                target.pop(path[-1], None)
            else:
                target[path[-1]] = data.draw(json_values, label=str(path))
        except (KeyError, IndexError, TypeError):
            continue                          # an earlier edit removed this path
    p = WORK / "fuzz-session.json"
    p.write_text(json.dumps(doc))
    _load_or_msa_error(p)


# --------------------------------------------------------------------------- solvers
@st.composite
def small_problems(draw, activation=None):
    d = draw(st.integers(1, 5))
    P = draw(st.integers(1, 8))
    Pt = draw(st.integers(1, 4))
    pool = st.floats(-5, 5, allow_subnormal=False)
    X = draw(hnp.arrays(np.float64, (P, d), elements=pool))
    if draw(st.booleans()):                   # duplicate inputs
        X[P // 2:] = X[: P - P // 2]
    y = draw(hnp.arrays(np.float64, (P,), elements=pool))
    Xs = draw(hnp.arrays(np.float64, (Pt, d), elements=pool))
    ys = draw(hnp.arrays(np.float64, (Pt,), elements=pool))
    logu = lambda lo, hi: st.floats(lo, hi).map(lambda v: float(10 ** v))  # noqa: E731
    N = draw(st.integers(1, 300))
    net = msa.Network(activation=activation or draw(st.sampled_from(msa.ACTIVATIONS)), N=N,
                      g_w=draw(logu(-1, 1)), g_a=draw(logu(-1, 1)), kappa=draw(logu(-4, 1)),
                      chi=draw(st.one_of(logu(0, math.log10(N) if N > 1 else 0),
                                         st.sampled_from([1.0, float(N)]))))
    return msa.Problem(msa.Data(X, y, Xs, ys), net)


def _solve_or_msa_error(problem, theory):
    try:
        res = quiet(msa.solve, problem, theory)
    except msa.MSAError as exc:
        assert "\n" not in str(exc)
        return None
    for name in ("train_mean", "test_mean", "test_predictive_variance", "weight_cov", "tbar"):
        assert np.all(np.isfinite(getattr(res, name))), name
    assert res.Q is not None and math.isfinite(res.Q)
    assert res.log_evidence is None or math.isfinite(res.log_evidence)
    assert res.converged
    return res


@fuzz(150)
@given(small_problems(activation="linear"))
def test_linear_theories_on_random_small_problems(problem):
    for theory in ("nngp", "rescaling", "tree", "one-loop", "exact"):
        _solve_or_msa_error(problem, theory)


@fuzz(150)
@given(small_problems(activation=None).filter(lambda p: p.network.activation != "linear"))
def test_nonlinear_theories_on_random_small_problems(problem):
    for theory in ("nngp", "rescaling"):
        _solve_or_msa_error(problem, theory)
    for theory in ("tree", "one-loop", "exact"):     # not implemented: a clear MSAError
        if theory in msa.theory.available_theories(problem.network.activation):
            continue
        with pytest.raises(msa.MSAError, match="linear networks only|exists only for linear"):
            msa.solve(problem, theory)


# --------------------------------------------------------------------------- regressions
# Minimal examples of what the long run (HYPOTHESIS_PROFILE=long) found; fixed in the engine.
def test_regression_a_line_break_in_a_key_keeps_the_error_on_one_line(tmp_path, capsys):
    with pytest.raises(msa.MSAError) as info:
        config_from_dict({"data": {"\n": None}})
    assert str(info.value) == "data: unknown key(s) for task 'linear': \\n"
    cfg = tmp_path / "c.toml"
    cfg.write_text('[network]\n"kap\\npa" = 1\n')
    from msa_engine.cli import main
    assert main(["solve", str(cfg), "--json"]) == 2
    err = capsys.readouterr().err
    assert err == "msa: error: network: unknown key(s) kap\\npa\n"


def test_regression_csv_header_wider_than_its_rows(tmp_path):
    (tmp_path / "d.csv").write_text("1,2,x\n0.0,0.0")
    with pytest.raises(msa.MSAError, match="the header has 3 columns but the rows have 2"):
        msa.make_data({"task": "csv", "path": str(tmp_path / "d.csv"), "target": "x"})


def test_regression_absurd_number_in_a_session_summary(tmp_path):
    doc = json.loads(session_text())
    n = len(doc["entries"][0]["summary"]["train_mean"])
    doc["entries"][0]["summary"]["train_mean"] = [1.3407807929942597e+154] * n
    p = tmp_path / "s.json"
    p.write_text(json.dumps(doc))
    rows = load_session(p).sweep_rows()       # no overflow warning, no exception
    assert len(rows) == len(doc["entries"])
    # a number where the list of means belongs is refused when the file is read,
    # by its path (it used to be read as a one-element list)
    doc["entries"][0]["summary"]["train_mean"] = 1.3407807929942597e+154
    p.write_text(json.dumps(doc))
    with pytest.raises(msa.MSAError, match=r"entries\[0\]\.summary\.train_mean: expected a list "
                       rf"of {n} numbers, got 1\.34"):
        load_session(p)


def test_regression_huge_targets_warn_instead_of_overflowing(tmp_path):
    np.savez(tmp_path / "d.npz", X_train=np.zeros((3, 1)), y_train=np.full(3, 1.34e154),
             X_test=np.zeros((1, 1)), y_test=np.zeros(1))
    with pytest.warns(msa.MSAWarning, match="targets have rms inf, far from O\\(1\\)"):
        msa.make_data({"task": "npz", "path": str(tmp_path / "d.npz")})
