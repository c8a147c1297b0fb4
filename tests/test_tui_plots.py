"""The hand-written plots and the form model, without a running app."""

from __future__ import annotations

from msa_engine.config import load_config
from msa_engine import figures
from msa_engine.plots import DEFAULT_PALETTE, Plot, Series, default_marker, fmt_tick, render
from msa_tui import model


def test_log_plot_with_error_bars_fits_its_box():
    p = Plot([Series("one-loop", [1, 10, 100], [0.2, 0.05, 0.01], kind="linepoints"),
              Series("sim", [1, 10, 100], [0.19, 0.06, 0.011], yerr=[0.01, 0.01, 0.002],
                     kind="points")], title="Fig. 2", xlabel="χ", xlog=True, ylog=True)
    for w, h in ((78, 18), (40, 10)):
        lines = render(p, w, h).plain.split("\n")
        assert len(lines) <= h and all(len(line) <= w for line in lines)
    text = render(p, 78, 18).plain
    assert "┬" in text and "10" in text and "100" in text and "● one-loop" in text
    assert "χ (log)" in text


def test_empty_and_tiny_plots_say_so():
    assert "nothing" in render(Plot(empty_message="nothing here"), 60, 10).plain
    assert "too small" in render(Plot([Series("a", [1, 2], [1, 2])]), 15, 4).plain


def test_series_past_the_eighth_keep_a_look_of_their_own():
    """Colour and marker both cycled through eight, so series 9 looked like series 1."""
    looks = {(DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)], default_marker(i)) for i in range(64)}
    assert len(looks) == 64
    p = Plot([Series(f"s{i}", [1, 2], [i, i + 1], kind="points") for i in range(10)])
    legend = render(p, 200, 30).plain
    assert "● s0" in legend and "▲ s8" in legend and "■ s9" in legend


def test_fmt_tick():
    assert [fmt_tick(v) for v in (0, 0.2, 100, 1e-5, 12345)] == ["0", "0.2", "100", "1e-5", "1e4"]


def test_form_round_trip_and_engine_validation():
    cfg = load_config(None).resolved
    st = model.FormState.from_config(cfg)
    assert st.network["chi"] == "mean-field"
    v = model.validate(st)
    assert v.ok and v.problem.network.chi == 100 and model.same_problem(cfg, v.config(st))
    st.network["g_a"] = "abc"
    st.data["d"] = "2.5"
    st.network["chi"] = "γ=3"
    v = model.validate(st)
    assert v.errors[("network", "g_a")].startswith("g_a must be a number")
    assert "data.d must be an integer" in v.errors[("data", "d")]
    assert "gamma must lie in [1, 2]" in v.errors[("network", "chi")]
    assert not v.ok and v.problem is None


def test_gamma_and_sweep_grid():
    st = model.FormState.from_config(load_config(None).resolved)
    st.network["chi"] = "gamma=1.5"
    st.sweep.update(points="3", chi_min="1", chi_max="mean-field")
    v = model.validate(st)
    assert abs(v.problem.network.chi - 10) < 1e-9
    assert [round(c, 6) for c in v.sweep["chis"]] == [1, 10, 100]


def test_fig2_groups_sessions_and_theories():
    entries = [{"kind": "theory", "name": "tree", "chi": c, "N": 100, "status": "ok",
                "summary": {"test_discrepancy": 0.2 / c}} for c in (1, 10)]
    entries.append({"kind": "simulation", "name": "sim-marginal", "chi": 10, "N": 100,
                    "status": "ok", "summary": {"test_discrepancy": 0.02,
                                                "test_discrepancy_se": 0.001}})
    entries.append({"kind": "theory", "name": "exact", "chi": 10, "N": 100, "status": "failed",
                    "summary": None, "error": "nope"})
    plot = figures.fig2([("A: ", entries)])
    assert [s.label for s in plot.series] == ["A: sim-marginal", "A: tree"]
    assert plot.series[0].yerr == [0.001] and plot.xlog and plot.ylog
    assert model.row_cells(entries[-1])["status"] == "failed"
    assert model.entry_problem(entries[-1]) == "failed: nope"
    assert model.row_cells(entries[2])["status"] == "ok"
    unmixed = dict(entries[2], summary=dict(entries[2]["summary"], converged=False,
                                            rhat_max=1.3, ess_min=400.0, acceptance=0.6))
    assert model.row_cells(unmixed)["status"] == "unconverged"
    assert model.entry_problem(unmixed).startswith("not converged (R̂_max 1.3000 ≥ 1.05)")
    # Fig. 2 says so in the series' label
    plot = figures.fig2([("A: ", entries[:2] + [unmixed])])
    assert [s.label for s in plot.series] == ["A: sim-marginal (unconverged)", "A: tree"]
    later = dict(entries[2], chi=1)
    plot = figures.fig2([("A: ", [later, unmixed])])
    assert [s.label for s in plot.series] == ["A: sim-marginal (1 of 2 unconverged)"]


def test_fig2_of_several_sessions_gives_each_series_its_own_look_and_a_short_legend():
    """Comparing two sessions of six curves each reused 8 markers and colours (series 9–12
    looked like 1–4) and cut the per-series legend to three rows (only the first
    session's entries showed)."""
    from pathlib import Path

    from msa_engine.sessions import load_session
    root = Path(__file__).resolve().parents[1] / "sessions"
    a, b = (load_session(root / f"pair-{k}.json") for k in ("standard", "mean-field"))
    p = figures.fig2([("pair-standard: ", a.entries), ("pair-mean-field: ", b.entries)])
    looks = [(s.color, s.marker) for s in p.series]
    assert len(p.series) == 12 and len(set(looks)) == 12
    # the same theory has one colour in both sessions, each session one marker
    by_label = {s.label: s for s in p.series}
    assert by_label["pair-standard: tree"].color == by_label["pair-mean-field: tree"].color
    assert {s.marker for s in p.series if s.label.startswith("pair-standard")} == {"●"}
    text = render(p, 78, 16).plain
    for word in ("━ tree", "━ nngp", "● pair-standard", "▲ pair-mean-field"):
        assert word in text, word
    # one session: the plot as before (colours and markers by position, one entry each)
    one = figures.fig2([("", a.entries)])
    assert one.legend is None and all(s.color is None and s.marker is None for s in one.series)
