"""SVG snapshots of the main screens at 80×24 and 120×40 (pytest-textual-snapshot).

Deterministic: a fresh session of the bundled config, deterministic theories only,
autosave off, notifications cleared, config/cache/sessions in temp dirs.
Update with ``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_textual_snapshot

from .tui_support import isolated, make_app, settle, tick_only  # noqa: F401

SIZES = [(80, 24), (120, 40)]


class _SnapshotsHere(pytest_textual_snapshot.SVGImageExtension):
    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(Path(test_location.filepath).parent / "snapshots" / test_location.basename)


@pytest.fixture(autouse=True)
def _snapshot_dir(monkeypatch):
    monkeypatch.setattr(pytest_textual_snapshot, "SVGImageExtension", _SnapshotsHere)


def _run(keys: str, tab: str, theories=("nngp", "tree", "one-loop", "exact")):
    async def run_before(pilot):
        app = pilot.app
        await pilot.pause()
        if keys:
            tick_only(app, *theories)
            app.query_one("#f-sweep-points").value = "4"
            await pilot.pause()
            await pilot.press(keys)
            await settle(pilot, app)
        app.clear_notifications()
        await pilot.press(tab)
        await pilot.pause()
    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_setup_screen(snap_compare, isolated, size):
    assert snap_compare(make_app(isolated), terminal_size=size, run_before=_run("", "1"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_results_screen(snap_compare, isolated, size):
    assert snap_compare(make_app(isolated), terminal_size=size, run_before=_run("r", "3"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fig2_screen(snap_compare, isolated, size):
    assert snap_compare(make_app(isolated), terminal_size=size, run_before=_run("w", "4"))
