"""msa_engine.diagnostics against ArviZ (arviz-stats) on shared arrays, and on AR(1) chains
whose autocorrelation time is known in closed form."""

import numpy as np
import pytest

from msa_engine import diagnostics as D

az = pytest.importorskip("arviz_stats.base").array_stats


def _arrays():
    rng = np.random.default_rng(7)
    iid = rng.standard_normal((4, 300))
    walk = np.cumsum(rng.standard_normal((4, 501)), axis=1) * 0.1 + rng.standard_normal((4, 501))
    shifted = rng.standard_normal((3, 400)) + np.array([0.0, 0.0, 0.8])[:, None]
    heavy = rng.standard_cauchy((2, 250))
    ties = rng.integers(0, 4, size=(4, 200)).astype(float)
    return {"iid": iid, "walk": walk, "shifted": shifted, "heavy": heavy, "ties": ties}


@pytest.mark.parametrize("name", list(_arrays()))
def test_matches_arviz(name):
    x = _arrays()[name]
    assert D.rhat(x) == pytest.approx(float(az.rhat(x)), rel=1e-10)
    assert D.ess_bulk(x) == pytest.approx(float(az.ess(x, method="bulk")), rel=1e-10)
    assert D.ess_mean(x) == pytest.approx(float(az.ess(x, method="mean")), rel=1e-10)
    assert D.ess_tail(x) == pytest.approx(float(az.ess(x, method="tail", prob=(0.05, 0.95))),
                                          rel=1e-10)
    assert D.mcse_mean(x) == pytest.approx(float(az.mcse(x, method="mean")), rel=1e-10)


def test_vectorised_over_trailing_axes():
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.standard_normal((3, 200, 4, 2)), axis=1) * 0.2 + rng.standard_normal((3, 200, 4, 2))
    r, e = D.rhat(x), D.ess_tail(x)
    assert r.shape == e.shape == (4, 2)
    for i in range(4):
        for j in range(2):
            assert r[i, j] == pytest.approx(float(az.rhat(x[:, :, i, j])), rel=1e-10)
            assert e[i, j] == pytest.approx(
                float(az.ess(x[:, :, i, j], method="tail", prob=(0.05, 0.95))), rel=1e-10)


def test_autocovariance_by_fft_of_a_smooth_length():
    """The FFT's length is the least even 2ᵃ3ᵇ5ᶜ ≥ 2n − 1 (not the power of two above it,
    up to twice as long), and the autocovariance is still the direct sum at every lag."""
    def smooth(k):
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        return k == 1
    for n in range(1, 2000):
        m = D._fft_length(n)
        assert m == next(k for k in range(max(n, 2), 4 * n + 4) if k % 2 == 0 and smooth(k))
    assert D._fft_length(2 * 75000 - 1) == 150000          # 2¹⁸ = 262144 before
    rng = np.random.default_rng(5)
    for n in (4, 5, 97, 300, 1001):
        x = np.cumsum(rng.standard_normal((2, n)), axis=1)
        xc = x - x.mean(axis=1, keepdims=True)
        direct = np.array([[xc[c, :n - k] @ xc[c, k:] / n for k in range(n)] for c in range(2)])
        np.testing.assert_allclose(D._autocov(x), direct, rtol=0, atol=1e-12 * np.abs(direct).max())


def test_ar1_autocorrelation_time():
    # AR(1) with coefficient rho has tau = (1 + rho) / (1 - rho) = 9 for rho = 0.8
    rng = np.random.default_rng(11)
    rho, C, n = 0.8, 4, 20000
    x = np.zeros((C, n))
    eps = rng.standard_normal((C, n)) * np.sqrt(1 - rho ** 2)
    x[:, 0] = rng.standard_normal(C)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + eps[:, t]
    assert D.autocorr_time(x) == pytest.approx(9.0, rel=0.1)
    assert D.rhat(x) < 1.01


def test_rhat_flags_unmixed_chains():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 500)) + np.arange(4)[:, None]
    assert D.rhat(x) > 1.5
    assert np.isnan(D.rhat(x[:1]))


def test_z_scale_is_scipys_rank_normalisation_exactly():
    # the table of Φ⁻¹ by twice the average rank and the unstable sort give the very
    # numbers of norm.ppf(rankdata(·, "average")), ties, ±0 and heavy tails included; a
    # series holding a NaN is NaN throughout, as rankdata propagates it
    from scipy import stats
    rng = np.random.default_rng(2)
    x = np.stack([rng.standard_normal((3, 40)), rng.integers(0, 3, (3, 40)).astype(float),
                  rng.standard_cauchy((3, 40)), rng.standard_normal((3, 40))])
    x[1, 0, :4] = [0.0, -0.0, 0.0, -0.0]
    x[3, 2, 7] = np.nan
    flat = x.reshape(4, -1)
    n = flat.shape[1]
    want = stats.norm.ppf((stats.rankdata(flat, method="average", axis=1) - 0.375) / (n + 0.25))
    got = D.z_scale(x).reshape(4, -1)
    assert np.array_equal(got[:3], want[:3])
    assert np.all(np.isnan(got[3])) and np.all(np.isnan(want[3]))


@pytest.mark.parametrize("name", list(_arrays()))
def test_rhat_ess_is_the_three_diagnostics(name):
    # computed together (shared rank normalisation, one batch) but the same bits
    x = _arrays()[name]
    stack = np.stack([x, x[::-1] * 2.0 + 1.0, np.abs(x)], axis=2)
    r, eb, et = D.rhat_ess(stack)
    for k in range(3):
        assert r[k] == D.rhat(stack[:, :, k])
        assert eb[k] == D.ess_bulk(stack[:, :, k])
        assert et[k] == D.ess_tail(stack[:, :, k])
    # a series with a NaN, a constant one and one with many ties at its median
    odd = np.stack([x, x, np.round(x * 2.0) / 2.0], axis=2)
    odd[0, 1, 0] = np.nan
    odd[:, :, 1] = 3.0
    r, eb, et = D.rhat_ess(odd)
    for k in range(3):
        np.testing.assert_array_equal([r[k], eb[k], et[k]],
                                      [D.rhat(odd[:, :, k]), D.ess_bulk(odd[:, :, k]),
                                       D.ess_tail(odd[:, :, k])])
    one = D.rhat_ess(x[:1])        # one chain: no R̂, the ESS still
    assert np.isnan(one[0]) and one[1] == D.ess_bulk(x[:1]) and one[2] == D.ess_tail(x[:1])
    assert all(np.isnan(v) for v in D.rhat_ess(x[:, :3]))


def test_folded_order_sorts_the_distances_from_the_median():
    # rhat_ess ranks |x − med| by merging the two halves of x's sort (no second sort);
    # the folded R̂ may be the smaller of the two, so check the order itself
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.standard_normal((3, 301)), rng.integers(-2, 3, (3, 301)) * 0.5,
                        rng.standard_cauchy((1, 301)), np.full((1, 301), 2.0)])
    x[0, :5] = [0.0, -0.0, 0.0, -0.0, 0.0]
    order = np.argsort(x, axis=1)
    srt = np.take_along_axis(x, order, axis=1)
    med = np.median(x, axis=1)
    out = np.empty_like(order)
    D._folded_order(srt, order, med, out)
    folded = np.abs(x - med[:, None])
    for s in range(x.shape[0]):
        assert np.array_equal(np.sort(out[s]), np.arange(x.shape[1]))
        assert np.all(np.diff(folded[s, out[s]]) >= 0)
