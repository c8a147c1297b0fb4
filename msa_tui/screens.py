"""Secondary screens: help, confirmation, naming, session browser, compare, replay."""

from __future__ import annotations

import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from rich.text import Text
from textual.widgets import DataTable, Header, Input, Label, Markdown, RichLog, Static

from msa_engine import MSAError

from msa_engine import figures

from . import model
from .widgets import BindingsFooter, PlotView, WrappedLog

HELP = """\
# msa-workbench

**Keys**: `r` run the ticked theories · `s` simulate · `w` sweep χ · `c`/`esc` cancel ·
`ctrl+s` save · `o` open/compare sessions · `p` next plot · `t` train/test · `y` replay a
result's convergence log · `e` export the results as CSV · `1`–`4` tabs · `ctrl+p` command
palette (screenshots, themes) · `ctrl+q` quit (asks while a job runs). In a text field
`esc` leaves the field and cancels nothing. `tab` moves between fields; on a choice
(task, activation, sampler, method) `enter` opens its list and `←`/`→` step through it.

**The model** (THEORY §1): `f(x) = Σᵢ aᵢ φ(wᵢ·x)` with `N` hidden units,
read-in prior `w ~ N(0, g_w/d)`, read-out prior `a ~ N(0, g_a/(χN))` and noise
variance `κ/χ`. The scaling `χ` goes from **standard** (`χ = 1`) to **mean field**
(`χ = N`); `χ = N^(γ−1)` with `γ ∈ [1, 2]` in between. Type `γ=1.5` in the χ field.

**Theories**: `nngp` (infinite width), `rescaling` (scalar kernel rescaling), `tree`
(saddle point, exact in mean field as N→∞), `one-loop` (fluctuation corrections, needed
in standard scaling), `exact` (linear networks only: the exact posterior).
For erf and ReLU, `tree` and `one-loop` are Monte Carlo: the **Monte Carlo** field takes
`key=value` pairs, a config's `[theory]` table: `seed`, `chains`, `max_chains`,
`precision`, `refine`, `estimator` (`auto`, `mcmc`, `is`), `anneal_factor`, … (README,
"Config"); its `seed` is also the base seed of a sweep (`w`). Each result records the
options and seed it ran with.

**Fig. 2** plots the test (or train, `t`) discrepancy `mean (y − f̄)²` against χ on log
axes: the NNGP is flat in χ, feature learning lowers the error toward mean field, and
simulations (error bars) are the ground truth.

**Σ_W** = ⟨WᵀW⟩/N: a bulk at the prior `g_w/d` and, with feature learning, an outlier
whose eigenvector aligns with the teacher.

Press `escape` to close.
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box", classes="dialog"):
            yield Markdown(HELP)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small"):
            # a Static wraps; a Label kept one line and cut the question at 80 columns
            yield Static(self.question, classes="question", markup=False)
            yield Label("[b]y[/b] yes   [b]n[/b] no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class NameScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, value: str = "") -> None:
        super().__init__()
        self.title_text, self.value = title, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small"):
            yield Label(self.title_text)
            yield Input(self.value, id="name")
            yield Label("enter to confirm · escape to cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)


def _reason(exc: Exception, path: Path) -> str:
    """Why ``path`` cannot be opened, naming the file only (the row or box names it; 40
    characters of the full path were all that showed)."""
    return str(exc).replace(str(path), path.name)


class SessionBrowser(Screen):
    """The sessions directory (and bundled sessions): open, delete, compare."""

    BINDINGS = [
        # priority: the table's own Enter (select the row) hid "Open" from the footer
        Binding("enter", "open", "Open", priority=True),
        Binding("space", "mark", "Mark"),
        Binding("m", "compare", "Compare marked"),
        Binding("d", "delete", "Delete"),
        Binding("escape", "dismiss(None)", "Back"),
    ]

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.paths: list[Path] = []
        self.notes: list[str] = []       # each row's notes in full (or why it is unreadable)
        self.marked: set[int] = set()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"sessions in {self.directory}", id="browser-title")
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        # the highlighted session's notes in full (the table's column shows 60
        # characters: an unreadable file's reason was cut there)
        yield Static("", id="browser-detail")
        yield BindingsFooter()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("", "name", "results", "where", "modified", "notes")
        self.reload()

    def reload(self) -> None:
        from msa_engine.sessions import bundled_sessions, list_sessions
        try:
            own = [Path(p) for p in list_sessions(self.directory)]
        except MSAError:
            own = []
        self.paths = own + [Path(p) for p in bundled_sessions() if Path(p) not in own]
        self.notes = []
        table = self.query_one(DataTable)
        table.clear()
        for i, p in enumerate(self.paths):
            try:
                s = model.open_session(p)
                n, notes = str(len(s.entries)), (getattr(s, "notes", "") or "").split("\n")[0]
            except MSAError as exc:
                # the reason, not the path the row already names (40 characters of the
                # path were all that showed)
                n, notes = "?", f"unreadable: {_reason(exc, p)}"
            where = "bundled" if i >= len(own) else "user"
            mod = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime)) \
                if p.exists() else ""
            self.notes.append(notes)
            table.add_row("✓" if i in self.marked else " ", p.stem, n, where, mod, notes[:60],
                          key=str(i))
        if not self.paths:
            self.query_one("#browser-title", Static).update(
                f"no sessions in {self.directory} yet: ctrl+s saves the current one")

    def _row(self) -> int | None:
        table = self.query_one(DataTable)
        return table.cursor_row if self.paths and table.cursor_row < len(self.paths) else None

    def action_open(self) -> None:
        i = self._row()
        if i is not None:
            self.dismiss(("open", self.paths[i]))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        i = event.cursor_row
        note = self.notes[i] if 0 <= i < len(self.notes) else ""
        self.query_one("#browser-detail", Static).update(
            Text(f"{self.paths[i].name}: {note}" if note else ""))

    def action_mark(self) -> None:
        i = self._row()
        if i is None:
            return
        self.marked ^= {i}
        self.query_one(DataTable).update_cell_at((i, 0), "✓" if i in self.marked else " ")

    def action_compare(self) -> None:
        if len(self.marked) < 2:
            self.notify("mark two or more sessions with space first", severity="warning")
            return
        self.dismiss(("compare", [self.paths[i] for i in sorted(self.marked)]))

    def action_delete(self) -> None:
        i = self._row()
        if i is None:
            return
        path = self.paths[i]
        if not path.is_relative_to(self.directory):
            self.notify("bundled sessions cannot be deleted", severity="warning")
            return

        def done(yes: bool | None) -> None:
            if yes:
                path.unlink(missing_ok=True)
                self.marked.clear()
                self.notify(f"deleted {path.name}")
                self.reload()
        self.app.push_screen(ConfirmScreen(f"Delete session {path.name}?"), done)


class CompareScreen(Screen):
    """Two or more sessions side by side, with their Fig. 2 curves overlaid."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Back"),
                Binding("t", "toggle_split", "Train/test"),
                Binding("e", "export", "CSV")]

    def __init__(self, paths, out_dir=None) -> None:
        super().__init__()
        self.paths = [Path(p) for p in paths]
        # where `e` writes: the workbench's session folder (the first session's folder
        # could be the package's, for a bundled session)
        self.out_dir = Path(out_dir) if out_dir is not None else self.paths[0].parent
        self.sessions = []
        self.split = "test"

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="compare-tables"):
            for i, _ in enumerate(self.paths):
                yield DataTable(id=f"cmp-{i}", cursor_type="row", zebra_stripes=True)
        yield PlotView(id="compare-plot")
        yield BindingsFooter()

    def on_mount(self) -> None:
        for i, p in enumerate(self.paths):
            table = self.query_one(f"#cmp-{i}", DataTable)
            try:
                s = model.open_session(p)
            except MSAError as exc:
                self.notify(str(exc), title=f"cannot open {p.name}", severity="error")
                # its box says so (it stood empty and untitled)
                table.border_title = f"{p.stem}: cannot open"
                table.add_column("reason")
                table.add_row(Text(_reason(exc, p)))
                continue
            self.sessions.append((p.stem, s))
            net = model.session_config(s).get("network", {})
            table.border_title = f"{p.stem}  (N={net.get('N')}, χ={model._num(net.get('chi'))})"
            table.add_columns("name", "χ", "N", "train", "test")
            for e in s.entries:
                r = model.row_cells(e)
                mark = {"ok": "", "unconverged": " *"}.get(r["status"], f" ({r['status']})")
                table.add_row(("sim " if r["kind"] == "sim" else "") + r["name"] + mark, r["chi"],
                              r["N"], r["train"], r["test"])
                if r["status"] == "unconverged":
                    table.border_subtitle = "* not converged: error bars unreliable"
        self.refresh_plot()

    def refresh_plot(self) -> None:
        groups = [(f"{name}: ", s.entries) for name, s in self.sessions]
        self.query_one(PlotView).show(figures.fig2(groups, self.split))

    def action_toggle_split(self) -> None:
        self.split = "train" if self.split == "test" else "test"
        self.refresh_plot()

    def action_export(self) -> None:
        stems = "-vs-".join(name for name, _ in self.sessions) or "sessions"
        out = self.out_dir / f"compare-{stems}.csv"
        # msa export's columns and precision, a session column in front
        from msa_engine.export import RESULT_COLUMNS, table_rows
        rows = [[name, *row] for name, s in self.sessions for row in table_rows(s)]
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            model.write_csv(out, rows, columns=RESULT_COLUMNS, prefix=("session",))
        except OSError as exc:
            self.notify(f"cannot write {out}: {exc.strerror or exc}", title="export failed",
                        severity="error")
            return
        self.notify(f"comparison written to {out}")


class ReplayScreen(Screen):
    """Animates a stored convergence log; + / - change the speed, space pauses."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Back"),
                Binding("space", "pause", "Pause"),
                Binding("plus,equals_sign", "speed(2)", "Faster", key_display="+"),
                Binding("minus", "speed(0.5)", "Slower", key_display="-"),
                Binding("r", "restart", "Restart")]

    RATE = 10.0   # records per second at speed 1

    def __init__(self, entry: dict, speed: float = 1.0) -> None:
        super().__init__()
        self.entry, self.records = entry, list(entry.get("log") or [])
        self.speed, self.pos, self.paused, self._acc = speed, 0, False, 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="replay-status")
        with Horizontal(id="replay-body"):
            yield WrappedLog(id="replay-log")
            yield PlotView(id="replay-plot")
        yield BindingsFooter()

    def on_mount(self) -> None:
        self.set_interval(0.05, self._step)
        self._status()

    def _status(self) -> None:
        e = self.entry
        self.query_one("#replay-status", Static).update(
            f"replay {e.get('name')} at χ={model._num(e.get('chi'))}: {self.pos}/{len(self.records)}"
            f" records · speed ×{self.speed:g}{' · paused' if self.paused else ''}")

    def _step(self) -> None:
        if self.paused or self.pos >= len(self.records):
            return
        self._acc += self.RATE * self.speed * 0.05
        n = int(self._acc)
        if not n:
            return
        self._acc -= n
        log = self.query_one("#replay-log", RichLog)
        for rec in self.records[self.pos:self.pos + n]:
            log.write(model.format_record(rec))
        self.pos = min(len(self.records), self.pos + n)
        self.query_one("#replay-plot", PlotView).show(
            figures.convergence(self.records[:self.pos], "Replay"))
        self._status()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self._status()

    def action_speed(self, factor: float) -> None:
        self.speed = min(64.0, max(0.25, self.speed * factor))
        self._status()

    def action_restart(self) -> None:
        self.pos, self._acc = 0, 0.0
        self.query_one("#replay-log", RichLog).clear()
        self._status()
