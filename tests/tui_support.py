"""Shared helpers for the TUI tests (tests/test_tui_*.py)."""

from __future__ import annotations

import pytest

from msa_engine.config import load_config


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Config, cache and sessions in temp dirs; returns the sessions dir."""
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.chdir(tmp_path)
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    return sessions


def make_app(session_dir, config_changes=None, **kwargs):
    """An app on a fresh session of the bundled default config (autosave off)."""
    from msa_tui import model
    from msa_tui.app import MSAApp

    cfg = load_config(None).resolved
    for section, changes in (config_changes or {}).items():
        cfg[section] = {**cfg.get(section, {}), **changes}
    kwargs.setdefault("autosave", False)
    return MSAApp(session=model.new_session(cfg), session_dir=session_dir, **kwargs)


async def settle(pilot, app):
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def set_field(pilot, app, field_id: str, value: str):
    app.query_one(f"#{field_id}").value = value
    await pilot.pause()


def tick_only(app, *theories):
    from textual.widgets import Checkbox
    for cb in app.query(Checkbox).results(Checkbox):
        if cb.id and cb.id.startswith("th-"):
            cb.value = cb.id.removeprefix("th-") in theories


def run_async(fn):
    """Run an ``async def`` test with ``asyncio.run`` (no async pytest plugin needed)."""
    import asyncio
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return wrapper
