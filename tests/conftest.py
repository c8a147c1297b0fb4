import os
import signal
import subprocess
import time

import numpy as np
import pytest

import msa_engine as msa

# Every check uses g_w != g_a and g_w*g_a != 1: linear outputs depend on
# g_w*g_a only, so a swapped prefactor would otherwise go unseen.
G_W, G_A = 1.5, 0.8


def linear_problem(N=100, chi=1.0, seed=1, d=30, P=20, P_test=40, kappa=0.1,
                   g_w=G_W, g_a=G_A, scale=1.0):
    data = msa.make_data({"task": "linear", "d": d, "P": P, "P_test": P_test, "seed": seed})
    if scale != 1.0:
        data = msa.Data(data.X_train, scale * data.y_train, data.X_test, scale * data.y_test,
                        teacher=data.teacher, spec=data.spec)
    net = msa.Network.make("linear", N=N, g_w=g_w, g_a=g_a, kappa=kappa, chi=chi)
    return msa.Problem(data, net)


def rms(a, b):
    return float(np.sqrt(np.mean(np.square(np.asarray(a) - np.asarray(b)))))


@pytest.fixture
def problem():
    return linear_problem()


@pytest.fixture(autouse=True)
def _compile_notice_given(monkeypatch):
    """The first-compile notice (msa_engine/jit.py) counts as given: which test compiles a
    kernel first depends on the order and on the numba cache (cold in CI, warm here), and
    no test of stderr may depend on that.  tests/test_jit_notice.py tests the notice."""
    from msa_engine import jit
    monkeypatch.setattr(jit, "_told", True)


def run_and_kill_9(cmd, ready, timeout=180.0, poll=0.05):
    """Start ``cmd`` in its own process group, wait until ``ready()`` is true, then
    SIGKILL the whole group (workers included), as a crash or an OOM killer would."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and not ready():
            time.sleep(poll)
        assert proc.poll() is None, "the run finished before it could be killed; enlarge it"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc
