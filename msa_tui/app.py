"""The workbench app: parameter panels, live convergence log, results, plots.

Long computations run in thread workers (``@work(thread=True)``) and report
only through ``post_message``; every widget and the session are touched on
the UI thread alone.  Cancelling sets a ``threading.Event`` that the workers'
callbacks (and the sampler, between chunks) check.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import (DataTable, Header, Input, ProgressBar, RichLog, Static, TabbedContent,
                             TabPane, Tab, Tabs)
from textual.css.query import NoMatches
from textual.widgets.data_table import CellDoesNotExist
from textual.worker import Worker, WorkerState

from msa_engine import Cancelled, MSAError, jit

from msa_engine import figures

from . import model
from .model import FormState, Validated
from .widgets import BindingsFooter, ParamForm, PlotView, WrappedLog, set_text


class Record(Message):
    """A solver iteration or a sampler chunk, from a worker thread."""

    def __init__(self, job: str, record: Any) -> None:
        super().__init__()
        self.job, self.record = job, record


class ResultReady(Message):
    def __init__(self, job: str, result: Any, log: list, options: dict | None = None) -> None:
        super().__init__()
        self.job, self.result, self.log, self.options = job, result, log, options


JOB_TAGS = {"theories": "theory", "simulation": "sim", "sweep": "sweep"}
IDLE_STATUS = "idle: press r (theories), s (simulate) or w (sweep)"


class Progress(Message):
    """``done`` of ``total`` for the progress bar; ``point``: a sweep point was completed
    (not only a step of one; see :class:`msa_engine.sweep.SweepMeter`)."""

    def __init__(self, job: str, done: float, total: float, label: str = "",
                 point: bool = False, warning: str | None = None) -> None:
        super().__init__()
        self.job, self.done, self.total, self.label, self.point = job, done, total, label, point
        self.warning = warning


class JobFailed(Message):
    """One item of a job failed with an MSAError; the job goes on."""

    def __init__(self, job: str, what: str, error: str) -> None:
        super().__init__()
        self.job, self.what, self.error = job, what, error


class JobDone(Message):
    def __init__(self, job: str, summary: str, cancelled: bool = False) -> None:
        super().__init__()
        self.job, self.summary, self.cancelled = job, summary, cancelled


class CompileNotice(Message):
    """numba is compiling the engine's kernels (first run after an install; from the
    compiling worker thread, through :func:`msa_engine.jit.push_reporter`)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


# the plots' tab labels, short enough for all four at 80 columns (the figures' own titles
# cut the last one to "Convergence tr")
PLOT_TABS = {"fig2": "Disc. vs χ (Fig. 2)", "predictions": "Predictions",
             "spectrum": "Σ_W spectrum", "convergence": "Convergence"}


class WorkbenchScreen(Screen):
    """The app's default screen.  Textual restyles every widget of a screen on its first
    resume, just after mounting styled them all: ≈ 155 widgets, 0.12 s of the start on a
    slow host (issue 7).  That resume skips it; later ones are Textual's own (a dialog
    popped resumes without restyling, and a theme change restyles through
    ``refresh_css``)."""

    _resumed_before = False

    def _on_screen_resume(self, event) -> None:
        # Dispatched before Screen's own handler (Textual calls the handlers of the
        # MRO in order), which reads ``refresh_styles``.
        if not self._resumed_before:
            self._resumed_before = True
            event.refresh_styles = False

    _resized_to = None

    def _on_resize(self, event) -> None:
        # A start brings three Resize events of one size (the driver's, the app's idle
        # check, the first layout's), and Screen lays everything out for each, 0.03-0.05 s
        # apiece on a slow host (issue 7).  Past the first, one of the size already laid
        # out stops here: anything that changed since asked for its own layout.
        if event.size == self._resized_to:
            event.stop()
            event.prevent_default()
        self._resized_to = event.size


class MSAApp(App):
    """``msa tui``: the terminal workbench."""

    CSS_PATH = "app.tcss"
    TITLE = "msa-workbench"
    BINDINGS = [
        Binding("r", "run_theories", "Run"),
        Binding("s", "simulate", "Simulate"),
        Binding("w", "sweep", "Sweep"),
        Binding("c", "cancel", "Cancel"),
        Binding("escape", "cancel", "Cancel", show=False),
        Binding("ctrl+s", "save", "Save"),
        Binding("o", "open", "Open"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("p", "next_plot", "Plot", show=False),
        Binding("t", "toggle_split", "Train/test", show=False),
        Binding("y", "replay", "Replay", show=False),
        Binding("e", "export_csv", "CSV", show=False),
        Binding("1", "tab('tab-setup')", "Setup", show=False),
        Binding("2", "tab('tab-run')", "Log", show=False),
        Binding("3", "tab('tab-results')", "Results", show=False),
        Binding("4", "tab('tab-plots')", "Plots", show=False),
    ]

    def __init__(self, session_path: str | Path | None = None, *,
                 session_dir: str | Path | None = None, session: Any = None,
                 autosave: bool = True) -> None:
        super().__init__()
        self.session_path = session_path
        self.session_dir = Path(session_dir) if session_dir is not None else None
        self.session = session
        self.autosave = autosave
        self.jobs: dict[str, threading.Event] = {}
        self.job_started: dict[str, float] = {}
        self.live: list = []            # records of the running job (convergence trace)
        # the job the live trace and the progress bar follow: the latest started; with
        # two jobs at once (a solve beside a simulation) both fed them, the trace mixed
        # residuals with R̂ and the bar jumped between the two
        self._live_job: str | None = None
        self._job_labels: dict[str, str] = {}
        self._trace_done = False        # a sweep point ended: its next record starts anew
        self._live_dirty = False        # records came in since the trace was drawn
        self._quitting = False          # ctrl+q said yes: quit once the jobs have stopped
        self.selected: int | None = None
        self.split = "test"
        self.ticks = 0
        self.validated: Validated | None = None
        self._revalidate_pending = False
        self._new_results = 0
        self._warned: set[str] = set()

    # -- layout ----------------------------------------------------------------
    def get_default_screen(self) -> Screen:
        return WorkbenchScreen(id="_default")

    # the workbench's keys act on the workbench: over a dialog (help, the session
    # browser, a comparison) they neither show in its footer nor start jobs behind it
    WORKBENCH_ONLY = {"run_theories", "simulate", "sweep", "save", "open", "next_plot",
                      "toggle_split", "replay", "export_csv", "tab"}

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in self.WORKBENCH_ONLY and not isinstance(self.screen, WorkbenchScreen):
            return False
        return True

    def compose(self) -> ComposeResult:
        if self.session is None:
            try:
                self.session = model.open_session(self.session_path)
            except MSAError as exc:
                self._open_error = str(exc)
                self.session = model.open_session(None)
        state = FormState.from_config(model.session_config(self.session),
                                      self.session.sweep)
        width = self.size.width
        wide = width >= 110
        yield Header()
        with TabbedContent(id="main", initial="tab-setup"):
            with TabPane("Setup", id="tab-setup"):
                # the width classes of on_resize, set before the first layout: added after
                # mounting, they restyle every field (0.3 s of the start, issue 7)
                yield ParamForm(state, id="form", classes="-wide" if wide else "")
            with TabPane("Log", id="tab-run"):
                yield Static(IDLE_STATUS, id="run-status")
                yield ProgressBar(total=1, id="progress", show_eta=False)
                with Horizontal(id="run-body", classes="-wide" if width >= 100 else ""):
                    yield WrappedLog(id="log", max_lines=5000)
                    yield PlotView(id="live-trace")
            with TabPane("Results", id="tab-results"):
                yield DataTable(id="results", cursor_type="row", zebra_stripes=True)
                yield Static("", id="detail")
                # apart from the detail, whose recipe may wrap at 80 columns: it was cut off
                yield Static("↑/↓ select · p next plot · t train/test · y replay log · "
                             "e export CSV", id="detail-keys")
            with TabPane("Plots", id="tab-plots"):
                yield Tabs(*[Tab(PLOT_TABS.get(k, figures.TITLES[k]), id=f"plot-{k}")
                             for k in figures.FIGURES],
                           id="plot-tabs")
                yield PlotView(id="plot")
        yield BindingsFooter()

    def on_mount(self) -> None:
        # SIGTERM (a `kill`, a closing tmux server): stop the jobs and quit as ctrl+q would
        # without asking, saving the finished results.  The command line's handler (a
        # KeyboardInterrupt) left the app drawn and the process alive while a worker ran.
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._terminate)
        except (NotImplementedError, RuntimeError, ValueError):   # not the main thread
            pass
        # a worker's first simulation or non-linear solve may compile the kernels for up
        # to a minute: say so instead of looking stuck (post_message is thread-safe)
        self._compile_notice = jit.push_reporter(
            lambda text: self.post_message(CompileNotice(text)))
        table = self.query_one("#results", DataTable)
        table.add_columns(*model.COLUMNS)
        self._update_title()
        self.refresh_results()
        self.set_interval(0.1, self._tick)
        if getattr(self, "_open_error", None):
            self.notify(self._open_error, title="could not open session", severity="error")
        elif self.session_path is None:
            self._mention_copies()

    def _mention_copies(self) -> None:
        """Opened on the bundled example, say where the user's saved copies of it are
        (a copy is saved under a free name, never over them: see model.save)."""
        if not model.is_bundled(self.session.path):
            return
        stem = Path(self.session.path).stem
        try:
            copies = sorted(p.name for p in self._directory().glob(f"{stem}*.json"))
        except OSError:
            return
        if copies:
            self.notify(f"this is the bundled example; your saved copies of it are in "
                        f"{self._directory()}: {', '.join(copies[:3])}"
                        f"{' …' if len(copies) > 3 else ''} (o opens them)", timeout=10)

    def on_resize(self, event) -> None:
        self.query_one("#form").set_class(event.size.width >= 110, "-wide")
        self.query_one("#run-body").set_class(event.size.width >= 100, "-wide")

    def _update_title(self) -> None:
        name = model.session_name(self.session)
        n = len(self.session.entries)
        self.sub_title = f"{name} · {n} result{'s' if n != 1 else ''}"

    def _tick(self) -> None:
        """A UI heartbeat; while jobs run it shows the elapsed time."""
        self.ticks += 1
        try:
            if self._live_dirty and self.ticks % 3 == 0:
                self._draw_live()
            if self.jobs and self.ticks % 5 == 0:
                now = time.monotonic()
                running = ", ".join(f"{j} {now - self.job_started.get(j, now):.0f}s"
                                    for j in self.jobs)
                # twice a second, in whole seconds: set only when the text changes
                set_text(self.query_one("#run-status", Static),
                         f"running (c cancels): {running}")
        except NoMatches:
            # the app is closing and its widgets are gone while the timer still runs
            # (seen once in CI: a tick between opening a session and the test's exit)
            pass

    # -- validation --------------------------------------------------------------
    @on(ParamForm.Edited)
    def _form_edited(self) -> None:
        # Coalesce bursts: mounting the form fires one Edited per field (31 at startup,
        # each a full read + validate + redraw of every error line: 0.9 s of the TUI's
        # 2 s start, issue 7).  One validation after the burst sees the same final form.
        if not self._revalidate_pending:
            self._revalidate_pending = True
            self.call_later(self._revalidate_later)

    def _revalidate_later(self) -> None:
        if self._revalidate_pending:
            self.revalidate()

    def revalidate(self) -> Validated:
        self._revalidate_pending = False
        form = self.query_one(ParamForm)
        self.validated = model.validate(form.read())
        form.show_validation(self.validated)
        # the engine's warnings (targets far from O(1), Monte Carlo options a linear
        # network ignores): a toast each time one appears, not at every keystroke
        new = [w for w in self.validated.warnings if w not in self._warned]
        self._warned = set(self.validated.warnings)
        for w in new:
            self.notify(w, title="note", severity="warning", timeout=8)
        return self.validated

    def _checked(self, need_sim: bool = False, need_sweep: bool = False,
                 need_theory: bool = False) -> Validated | None:
        v = self.revalidate()
        errors = {k: m for k, m in v.errors.items()
                  if k[0] in ("data", "network") or (need_sim and k[0] == "simulation")
                  or (need_sweep and k[0] == "sweep") or (need_theory and k[0] == "theory")}
        if errors:
            (section, key), msg = next(iter(errors.items()))
            self.notify(model.error_text(section, key, msg),
                        title="cannot run: fix the form", severity="error")
            self._show_tab("tab-setup")
            try:
                self.query_one(f"#f-{section}-{key}").focus()
            except Exception:
                pass
            return None
        return v

    def _use_config(self, v: Validated) -> bool:
        """Runs go into the current session unless the data or network changed.  While a
        job runs on the current session that would move its result into the new one (a
        result of the old problem filed under the new), so the run is refused: False."""
        cfg = v.config(self.query_one(ParamForm).state)
        if not model.same_problem(model.session_config(self.session), cfg):
            if self.jobs:
                self.notify(f"the data or network changed, and {', '.join(self.jobs)} still "
                            "runs on the current session: wait for it or cancel it (c), "
                            "then run again", title="cannot run yet", severity="warning",
                            timeout=8)
                return False
            had = bool(self.session.entries)
            self.session = model.new_session(cfg, notes=self.session.notes)
            if had:
                self.notify("data or network changed: results go into a new session")
            self._update_title()
            self.refresh_results()
        else:
            self._keep_settings(cfg, v)
        return True

    def _keep_settings(self, cfg: dict, v: Validated) -> None:
        """The session's [simulation] and [theory] tables follow the form, so that a saved
        session reopens with the settings last used (each entry records its own).  A
        section with an invalid field is left as it was, not dropped."""
        config = model.session_config(self.session)
        for key in ("simulation", "theory"):
            if any(section == key for section, _ in v.errors):
                continue
            if key in cfg:
                config[key] = cfg[key]
            else:
                config.pop(key, None)

    # -- starting jobs -----------------------------------------------------------
    def _start(self, job: str, label: str, total: float | None) -> threading.Event | None:
        if job in self.jobs:
            self.notify(f"{job} already running (c cancels)", severity="warning")
            return None
        ev = threading.Event()
        self.jobs[job] = ev
        self.job_started[job] = time.monotonic()
        self.live, self._trace_done = [], False
        self._live_job = job
        self._job_labels[job] = label
        log = self.query_one("#log", RichLog)
        log.write(f"── {label}")
        self.query_one("#progress", ProgressBar).update(total=total, progress=0)
        # the key first: at 80 columns a long label cut "(c to cancel)" off
        self.query_one("#run-status", Static).update(f"running (c cancels): {label}")
        self._show_tab("tab-run")
        return ev

    def action_run_theories(self) -> None:
        v = self._checked(need_theory=True)
        if v is None:
            return
        from msa_engine.theory import available_theories
        ticked = self.query_one(ParamForm).state.theories
        theories = [t for t in ticked if t in available_theories(v.problem.network.activation)]
        if not theories:
            self.notify("tick at least one theory available for this activation",
                        severity="error", title="cannot run")
            return
        if len(theories) < len(ticked):
            self.notify(f"skipping {', '.join(t for t in ticked if t not in theories)}: not "
                        f"available for {v.problem.network.activation} networks")
        if not self._use_config(v):
            return
        net = v.problem.network
        ev = self._start("theories", f"theories {', '.join(theories)} at χ={net.chi:.4g}, N={net.N}",
                         len(theories))
        if ev is not None:
            self._theory_worker(v.problem, theories, ev, v.theory_seed, v.theory_options)

    def action_simulate(self) -> None:
        v = self._checked(need_sim=True)
        if v is None:
            return
        if not self._use_config(v):
            return
        longer = self._longer_simulation(v)
        if longer is not None:
            from .screens import ConfirmScreen
            o = v.sim_options
            self.push_screen(ConfirmScreen(
                f"The session holds a longer {longer}. This run ({o['chains']} chains × "
                f"{o['steps']} steps) would replace it: a session keeps one simulation per "
                "point. Run it anyway?"),
                lambda yes: self._start_simulation(v) if yes else
                self.notify("not run: the longer simulation is kept", severity="warning"))
            return
        self._start_simulation(v)

    def _longer_simulation(self, v: Validated) -> str | None:
        """The stored simulation that this run would replace, described, where it has more
        chain-steps (a quick look must not throw a long run away, autosaved at once)."""
        o, net = v.sim_options, v.problem.network
        name = f"sim-{o['sampler']}"
        for e in self.session.find("simulation", name, net.chi, net.N):
            eo = e.get("options") or {}
            try:
                old = int(eo.get("chains")) * int(eo.get("steps"))
            except (TypeError, ValueError):
                continue
            if old > int(o["chains"]) * int(o["steps"]):
                rhat = model._num((e.get("summary") or {}).get("rhat_max"))
                return (f"{name} at χ={e['chi']:.4g}, N={e['N']} ({eo['chains']} chains × "
                        f"{eo['steps']} steps, R̂ {rhat})")
        return None

    def _start_simulation(self, v: Validated) -> None:
        o = v.sim_options
        ev = self._start("simulation", f"simulation {o['sampler']}/{o['method']}: {o['chains']} chains"
                         f" × {o['steps']} steps at χ={v.problem.network.chi:.4g}", o["steps"])
        if ev is not None:
            self._simulation_worker(v.problem, dict(o), ev)

    def action_sweep(self) -> None:
        v = self._checked(need_sim=self.query_one(ParamForm).state.sweep_simulate, need_sweep=True,
                          need_theory=True)
        if v is None:
            return
        theories = self.query_one(ParamForm).state.theories
        if not self._use_config(v):
            return
        sw = v.sweep
        top = "N at each width" if sw["chis"][-1] == "N" else f"{sw['chi_max']:.4g}"
        ev = self._start("sweep", f"sweep over {len(sw['chis'])} χ from {sw['chi_min']:.4g} to "
                         f"{top}" + (" with simulations" if sw["simulate"] else ""),
                         None)
        if ev is not None:
            self._sweep_worker(self.session, sw, theories, v.sim_options, ev, v.theory_options,
                               v.theory_seed)

    def action_cancel(self) -> None:
        # Escape in a text field leaves it (whose letters the run keys r, s, w and the tab
        # keys 1–4 would otherwise be typed into), and cancels nothing: a user leaving a
        # field while a long run went on lost the run
        if isinstance(self.focused, Input):
            self.set_focus(None)
            return
        if not self.jobs:
            return
        for ev in self.jobs.values():
            ev.set()
        self.query_one("#run-status", Static).update("cancelling…")
        self.notify("cancelling…", severity="warning")

    # -- workers (threads: only post_message from here) ------------------------------
    def _callback(self, job: str, cancel: threading.Event, sink: list | None = None):
        meter = None
        if job == "sweep":
            from msa_engine.sweep import SweepMeter
            meter = SweepMeter()

        def callback(rec):
            if cancel.is_set():
                raise Cancelled()
            point = type(rec).__name__ == "SweepProgress"
            if meter is not None:
                completed = meter.update(rec)
                if completed is not None:
                    self.post_message(Progress(job, completed, meter.total,
                                               rec.label if point else "",
                                               point=point and rec.done > 0,
                                               warning=rec.warning if point else None))
            if point:
                return
            if sink is not None:
                sink.append(rec)
            self.post_message(Record(job, rec))
        callback.meter = meter
        return callback

    @work(thread=True, exit_on_error=False, group="compute")
    def _theory_worker(self, problem, theories: list[str], cancel: threading.Event,
                       seed: int | None = None, options: dict | None = None) -> None:
        done = 0
        try:
            for i, name in enumerate(theories):
                try:
                    res = model.run_theory(problem, name, seed=seed, options=options,
                                           callback=self._callback("theories", cancel))
                except MSAError as exc:
                    self.post_message(JobFailed("theories", name, str(exc)))
                else:
                    done += 1
                    self.post_message(ResultReady("theories", res, list(res.log), options))
                self.post_message(Progress("theories", i + 1, len(theories), name))
        except Cancelled:
            self.post_message(JobDone("theories", f"theories cancelled ({done} done)", True))
            return
        self.post_message(JobDone("theories", f"theories: {done}/{len(theories)} computed"))

    @work(thread=True, exit_on_error=False, group="compute")
    def _simulation_worker(self, problem, options: dict, cancel: threading.Event) -> None:
        chunks: list = []
        try:
            res = model.run_simulation(problem, options,
                                       callback=self._callback("simulation", cancel, chunks),
                                       cancel=cancel)
        except Cancelled:
            self.post_message(JobDone("simulation", "simulation cancelled", True))
            return
        except MSAError as exc:
            self.post_message(JobFailed("simulation", "simulation", str(exc)))
            self.post_message(JobDone("simulation", "simulation failed"))
            return
        self.post_message(ResultReady("simulation", res, chunks, options))
        self.post_message(JobDone("simulation", "simulation finished"))

    @work(thread=True, exit_on_error=False, group="compute")
    def _sweep_worker(self, session, sweep: dict, theories, sim_options, cancel,
                      theory_options: dict | None = None, seed: int | None = None) -> None:
        callback = self._callback("sweep", cancel)
        try:
            model.run_sweep(session, sweep, theories, sim_options,
                            callback=callback, cancel=cancel,
                            theory_options=theory_options, seed=seed)
        except Cancelled:
            self.post_message(JobDone("sweep", "sweep cancelled", True))
            return
        except MSAError as exc:
            self.post_message(JobFailed("sweep", "sweep", str(exc)))
            self.post_message(JobDone("sweep", "sweep stopped"))
            return
        added = callback.meter.done      # points computed (a failed one recomputed too)
        self.post_message(JobDone("sweep", f"sweep finished: {len(sweep['chis'])} χ points, "
                                  f"{added} result{'s' if added != 1 else ''} computed"
                                  if added else
                                  f"sweep: all {len(sweep['chis'])} χ points of this grid were "
                                  "already in the session; nothing to compute"))

    # -- worker messages (UI thread) ---------------------------------------------------
    def on_record(self, msg: Record) -> None:
        line = model.format_record(msg.record)
        if len(self.jobs) > 1:      # two jobs' records interleave: say whose each one is
            line = f"{JOB_TAGS.get(msg.job, msg.job)} │ {line}"
        self.query_one("#log", RichLog).write(line)
        if msg.job != self._live_job:
            return
        if self._trace_done:
            self.live, self._trace_done = [], False
        self.live.append(msg.record)
        rec = model.record_dict(msg.record)
        if model.is_chunk(rec) and msg.job == "simulation":
            self.query_one("#progress", ProgressBar).update(
                total=rec.get("steps_total"), progress=rec.get("steps_done", 0))
        # the trace is redrawn by _tick, at most a few times a second: rebuilt from every
        # live record at each one, a fast sampler's hundreds of records took seconds a
        # key press in the interface (one tab switch 3 s at 800 records)
        self._live_dirty = True

    def _draw_live(self) -> None:
        self._live_dirty = False
        self.query_one("#live-trace", PlotView).show(figures.convergence(self.live, "Live trace"))

    def on_progress(self, msg: Progress) -> None:
        if msg.job == self._live_job:
            self.query_one("#progress", ProgressBar).update(total=msg.total, progress=msg.done)
        if msg.job == "sweep" and msg.point:
            self._new_results += 1
            # the live trace follows the point being computed (from its first record on):
            # accumulated over the sweep it showed every χ point's residuals joined up,
            # and, once theory records were in it, never a simulation's R̂
            self._trace_done = True
            self.refresh_results()
            if msg.label:
                self.query_one("#log", RichLog).write(f"── {msg.label}")
            if msg.warning:     # an unconverged simulation point: in the log, no toast each
                self.query_one("#log", RichLog).write(f"⚠ {msg.label}: {msg.warning}")

    def on_result_ready(self, msg: ResultReady) -> None:
        before = list(self.session.entries)
        try:
            # the options travel with the entry, so that a rerun (msa replay --rerun)
            # uses the same chains, steps and seed, not the defaults
            self.session.add_result(msg.result, log=[model.record_dict(r) for r in msg.log],
                                    options=msg.options or None)
        except MSAError as exc:
            self.notify(str(exc), title="result not stored", severity="error")
            return
        self._new_results += 1
        self._say_replaced(before, self.session.entries[-1])
        entry = self.session.entries[-1]
        s = entry.get("summary", {})
        problem = model.entry_problem(entry)
        self.query_one("#log", RichLog).write(
            f"{'⚠' if problem else '✓'} {entry.get('name')}: train "
            f"{model._num(s.get('train_discrepancy'))}  test {model._num(s.get('test_discrepancy'))}"
            + (f"  — {problem}" if problem else ""))
        if problem:
            self.notify(problem, title=f"{entry.get('name')}: not converged",
                        severity="warning", timeout=12)
        self.selected = len(self.session.entries) - 1
        self.refresh_results()

    def _say_replaced(self, before: list, entry: dict) -> None:
        """A session keeps one result per (kind, name, χ, N): a new simulation replaces
        the one there, which may have been the longer run.  Say which, with its size."""
        if entry.get("kind") != "simulation":
            return      # a theory's numbers are the same again (or its options changed)
        kept = {id(e) for e in self.session.entries}
        gone = [e for e in before if e.get("status") == "ok" and id(e) not in kept]
        for e in gone:
            o = e.get("options") or {}
            self.notify(f"replaced the earlier {e['name']} at χ={e['chi']:.4g}, N={e['N']} "
                        f"({o.get('chains', '?')} chains × {o.get('steps', '?')} steps, "
                        f"R̂ {model._num((e.get('summary') or {}).get('rhat_max'))}) with this "
                        "run: a session keeps one per point", severity="warning", timeout=10)

    def on_unmount(self) -> None:
        jit.remove_reporter(getattr(self, "_compile_notice", None))
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    def on_compile_notice(self, msg: CompileNotice) -> None:
        self.query_one("#log", RichLog).write(f"… {msg.text}")
        self.notify(msg.text, title="first run", timeout=12)

    def on_job_failed(self, msg: JobFailed) -> None:
        self.query_one("#log", RichLog).write(f"✗ {msg.what}: {msg.error}")
        self.notify(msg.error, title=f"{msg.what} failed", severity="error")

    def on_job_done(self, msg: JobDone) -> None:
        self._finish(msg.job, msg.summary, msg.cancelled)

    def _finish(self, job: str, summary: str, cancelled: bool = False) -> None:
        self.jobs.pop(job, None)
        self.job_started.pop(job, None)
        self._job_labels.pop(job, None)
        if job == self._live_job and self.jobs:   # the trace follows the one still running
            self._live_job = next(reversed(self.jobs))
            self.live, self._trace_done = [], False
        if self._live_dirty:
            self._draw_live()
        still = self._job_labels.get(self._live_job) if self.jobs else None
        # (with another job still running, the status says so: it read "idle"-like)
        self.query_one("#run-status", Static).update(
            summary if still is None else f"running (c cancels): {still}")
        bar = self.query_one("#progress", ProgressBar)
        if not cancelled and bar.total is None:      # a sweep with nothing to compute
            bar.update(total=1, progress=1)
        self.query_one("#log", RichLog).write(f"── {summary}")
        self.notify(summary, severity="warning" if cancelled else "information")
        self.refresh_results()
        if self._new_results and not self.jobs:
            self._new_results = 0
            if self.autosave:
                self._save(quiet=True)
            if not cancelled and not isinstance(self.focused, Input):
                # (not while a field is being edited: the switch would take the focus, and
                # the next letter typed would act as a workbench key)
                self._show_tab("tab-results")
        if self._quitting and not self.jobs:
            self.exit()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that raised something other than MSAError: report it, keep running."""
        if event.state != WorkerState.ERROR:
            return
        err = event.worker.error
        job = {"_theory_worker": "theories", "_simulation_worker": "simulation",
               "_sweep_worker": "sweep"}.get(event.worker.name, event.worker.name)
        self.notify(f"{type(err).__name__}: {err}", title=f"{job}: internal error",
                    severity="error", timeout=10)
        self._finish(job, f"{job} failed: {type(err).__name__}: {err}")

    # -- results and plots ------------------------------------------------------------
    def refresh_results(self) -> None:
        table = self.query_one("#results", DataTable)
        entries = list(self.session.entries)
        table.clear()
        for i in model.display_order(entries):
            table.add_row(*model.entry_row(entries[i]), key=str(i))
        if entries:
            sel = self.selected if self.selected is not None and self.selected < len(entries) \
                else len(entries) - 1
            table.move_cursor(row=table.get_row_index(str(sel)), animate=False)
            self.selected = sel
        self._update_title()
        self._update_detail()
        self.refresh_plot()

    @on(DataTable.RowHighlighted, "#results")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # The row under the cursor now, not the event's: filling the table reports row 0
        # before refresh_results moves the cursor to the selection, and that stale event,
        # arriving after, flipped the selection away and back (two details and figures
        # at every start; issue 7).  A row already selected was shown by refresh_results.
        table = event.data_table
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except CellDoesNotExist:        # an empty table: nothing highlighted
            return
        if key.value is None or int(key.value) == self.selected:
            return
        self.selected = int(key.value)
        self._update_detail()
        self.refresh_plot()

    def _selected_entry(self) -> dict | None:
        entries = self.session.entries
        if not entries:
            return None
        i = self.selected if self.selected is not None and self.selected < len(entries) else -1
        return entries[i]

    def _update_detail(self) -> None:
        e = self._selected_entry()
        detail = self.query_one("#detail", Static)
        if e is None:
            set_text(detail, "no results yet: press r to run the ticked theories")
            return
        s = e.get("summary") or {}
        problem = model.entry_problem(e)
        if problem is not None and e.get("status", "ok") != "ok":
            set_text(detail, f"{e.get('kind')} {e.get('name')}  χ={model._num(e.get('chi'))} "
                     f"N={e.get('N')}  {problem}{_ran_with(e)}")
            return
        set_text(detail,
            (f"⚠ {problem}\n" if problem else "") +
            f"{e.get('kind')} {e.get('name')}  χ={model._num(e.get('chi'))} N={e.get('N')}  "
            f"test loss {model._num(s.get('test_loss'))}  test var {model._num(s.get('test_variance'))}"
            f"  alignment {model._num(s.get('kernel_alignment'), '.3f')}"
            f"  excess λ {model._num(s.get('weight_cov_excess'))}  "
            f"log-evidence {model._num(s.get('log_evidence'))}"
            f"{_ran_with(e)}")

    def refresh_plot(self) -> None:
        try:
            kind = (self.query_one("#plot-tabs", Tabs).active or "plot-fig2").removeprefix("plot-")
        except Exception:
            kind = "fig2"
        self.query_one("#plot", PlotView).show(self.figure(kind))

    def figure(self, kind: str):
        e = self._selected_entry()
        if kind == "fig2":
            return figures.fig2([("", self.session.entries)], self.split)
        if kind == "convergence":
            return figures.convergence(e.get("log") or [] if e else [],
                                       f"Convergence: {e.get('name')}" if e else "Convergence trace")
        cfg = model.session_config(self.session)
        if kind == "spectrum":
            net = cfg.get("network", {})
            return figures.spectrum(e, net.get("g_w"), cfg.get("data", {}).get("d"))
        data = self._data()
        return figures.predictions(e, None if data is None else data.y_train,
                                   None if data is None else data.y_test)

    def _data(self):
        if getattr(self, "_data_cache", (None, None))[0] is not self.session:
            try:
                self._data_cache = (self.session, self.session.problem().data)
            except MSAError:
                self._data_cache = (self.session, None)
        return self._data_cache[1]

    @on(Tabs.TabActivated, "#plot-tabs")
    def _plot_tab(self) -> None:
        self.refresh_plot()

    def action_next_plot(self) -> None:
        self._show_tab("tab-plots")
        self.query_one("#plot-tabs", Tabs).action_next_tab()

    def action_toggle_split(self) -> None:
        self.split = "train" if self.split == "test" else "test"
        self.notify(f"discrepancy plot shows the {self.split} set")
        self.refresh_plot()

    def action_tab(self, tab: str) -> None:
        self._show_tab(tab)

    # the widget that takes the focus when a tab is shown and the focus is elsewhere
    TAB_FOCUS = {"tab-run": "#log", "tab-results": "#results", "tab-plots": "#plot-tabs"}

    def _show_tab(self, tab: str) -> None:
        """Show ``tab`` and take the focus along.  A focused widget left behind in a hidden
        pane (a Setup checkbox when `r` starts a run) made Textual show its pane again,
        undoing the switch, and the next keys (`2`, `?`, `s`) were typed into a field."""
        tabs = self.query_one(TabbedContent)
        tabs.active = tab
        target = self.TAB_FOCUS.get(tab)
        if target is not None:
            # also from nothing focused or the tab bar: after a run the Results tab showed
            # with its table unfocused, and ↑/↓ ("↑/↓ select") did nothing
            self.query_one(target).focus()
            return
        focused = self.focused
        if focused is not None and any(isinstance(w, TabPane) and w.id != tab
                                       for w in focused.ancestors_with_self):
            self.set_focus(None)

    # -- sessions ----------------------------------------------------------------------
    def _directory(self) -> Path:
        if self.session_dir is not None:
            return self.session_dir
        from msa_engine.sessions import session_dir
        return Path(session_dir())

    def _save(self, name: str | None = None, quiet: bool = False) -> Path | None:
        v = self.revalidate()
        if v.problem is not None:
            cfg = v.config(self.query_one(ParamForm).state)
            if model.same_problem(model.session_config(self.session), cfg):
                self._keep_settings(cfg, v)
        try:
            path = model.save(self.session, self._directory(), name)
        except (MSAError, OSError) as exc:
            self.notify(str(exc), title="save failed", severity="error")
            return None
        self._update_title()
        self.notify(f"{'autosaved' if quiet else 'saved'} to {path}", timeout=3 if quiet else 5)
        return path

    def action_save(self) -> None:
        if self.session.path is None:
            from .screens import NameScreen
            self.push_screen(NameScreen("Save session as", "my-session"), self._save_named)
        else:
            self._save()

    def action_save_as(self) -> None:
        from .screens import NameScreen
        self.push_screen(NameScreen("Save session as", model.session_name(self.session)),
                         self._save_named)

    def _save_named(self, name: str | None) -> None:
        """Save under ``name``; another session's file of that name is replaced only when
        the user says so."""
        if not name:
            return
        target = model.named_target(self._directory(), name)
        mine = (self.session.path is not None
                and Path(self.session.path).resolve() == target.resolve())
        if target.exists() and not mine:
            from .screens import ConfirmScreen
            self.push_screen(ConfirmScreen(f"{target} exists. Replace it with this session?"),
                             lambda yes: self._save(name) if yes else
                             self.notify("not saved", severity="warning"))
            return
        self._save(name)

    async def action_quit(self) -> None:
        """ctrl+q: with a job running, ask first (its partial work would be lost)."""
        if not self.jobs:
            self.exit()
            return
        from .screens import ConfirmScreen
        running = ", ".join(self.jobs)
        self.push_screen(ConfirmScreen(f"{running} still running. Quit now and lose "
                                       f"{'its' if len(self.jobs) == 1 else 'their'} "
                                       "unfinished work? Finished results are saved."),
                         lambda yes: self._quit_now() if yes else None)

    def _quit_now(self) -> None:
        """Stop the jobs, then quit once they have ended (:meth:`_finish` saves what they
        finished, a sweep's points included), or after 10 s whatever they do."""
        self._quitting = True
        for ev in self.jobs.values():
            ev.set()
        self.query_one("#run-status", Static).update("stopping the running jobs to quit…")
        self.set_timer(10, self._quit_anyway)

    def _terminate(self) -> None:
        if self.jobs:
            self._quit_now()       # the jobs stop at their next chunk or point, then exit
        else:
            self._quit_anyway()

    def _quit_anyway(self) -> None:
        # a job that did not stop in time: save what is safe to write from here (a sweep
        # worker may still be adding entries to the session) and go
        if self.autosave and self._new_results and "sweep" not in self.jobs:
            self._save(quiet=True)
        self.exit()

    def action_open(self) -> None:
        from .screens import SessionBrowser
        self.push_screen(SessionBrowser(self._directory()), self._browser_done)

    def _browser_done(self, result) -> None:
        if not result:
            return
        action, arg = result
        if action == "open":
            self.open_path(arg)
        elif action == "compare":
            from .screens import CompareScreen
            self.push_screen(CompareScreen(arg, self._directory()))

    def open_path(self, path) -> None:
        if self.jobs:
            self.notify("wait for (or cancel) the running job first", severity="warning")
            return
        try:
            session = model.open_session(path)
        except MSAError as exc:
            self.notify(str(exc), title="could not open session", severity="error")
            return
        self.set_session(session)
        self.notify(f"opened {model.session_name(session)}")

    def set_session(self, session) -> None:
        self.session = session
        self.selected = None
        # the Log's status and bar were the previous session's last job's ("sweep
        # cancelled", 89%); the log itself keeps its history, marked
        self.query_one("#run-status", Static).update(IDLE_STATUS)
        self.query_one("#progress", ProgressBar).update(total=1, progress=0)
        self.query_one("#log", RichLog).write(f"── opened {model.session_name(session)}")
        self.live, self._live_dirty = [], True
        self.run_worker(self.query_one(ParamForm).load(
            FormState.from_config(model.session_config(session), session.sweep)),
            exclusive=False)
        self.refresh_results()

    def action_compare(self) -> None:
        self.action_open()
        self.notify("mark sessions with space, then press m to compare")

    def action_replay(self) -> None:
        e = self._selected_entry()
        if e is None or not e.get("log"):
            self.notify("the selected result has no convergence log", severity="warning")
            return
        from .screens import ReplayScreen
        self.push_screen(ReplayScreen(e))

    def action_help(self) -> None:
        from .screens import HelpScreen
        self.push_screen(HelpScreen())

    def _export_directory(self) -> Path:
        """Where `e` writes: beside the session's file, where it saves and autosaves (a
        session opened by its path, outside the session folder, had its table written
        into the session folder instead); a bundled or not yet saved session's table
        goes to the session folder, where saving it would put it."""
        path = getattr(self.session, "path", None)
        if path is not None and not model.is_bundled(path):
            return Path(path).expanduser().parent
        return self._directory()

    def action_export_csv(self) -> None:
        # the table `msa export --format csv` writes (machine-readable column names, every
        # digit), not the screen's rounded one with its "±" and "–" cells
        from msa_engine.export import export_session
        beside, note = self._export_directory(), ""
        for folder in dict.fromkeys([beside, self._directory()]):   # beside it, else the
            try:                                                     # session folder
                [path] = export_session(self.session, "csv", folder)
                break
            except (MSAError, OSError) as exc:
                note = str(exc)
        else:
            self.notify(note, title="export failed", severity="error")
            return
        if folder != beside:
            self.notify(f"results table written to {path} ({note})", severity="warning")
        else:
            self.notify(f"results table written to {path}")

    def get_system_commands(self, screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if not isinstance(screen, WorkbenchScreen):
            return      # as the keys (check_action): nothing starts behind another screen
        for title, help_, cb in (
            ("Run theories", "Compute the ticked theories (r)", self.action_run_theories),
            ("Simulate", "Sample the posterior with the simulation settings (s)", self.action_simulate),
            ("Sweep χ", "Theories (and simulations) along the χ grid of the Sweep panel (w)",
             self.action_sweep),
            ("Cancel", "Cancel running jobs (c)", self.action_cancel),
            ("Save session", "Save the session (ctrl+s)", self.action_save),
            ("Save session as…", "Save under a new name", self.action_save_as),
            ("Open session…", "Browse saved sessions (o)", self.action_open),
            ("Compare sessions…", "Mark sessions in the browser and compare them",
             self.action_compare),
            ("Replay convergence log", "Animate the selected result's log (y)", self.action_replay),
            ("Export results CSV", "Write the results table as CSV (e)", self.action_export_csv),
            ("Next plot", "Cycle the plots (p)", self.action_next_plot),
            ("Help", "Keys and the science in brief (?)", self.action_help),
        ):
            yield SystemCommand(title, help_, cb)


def _ran_with(entry: dict) -> str:
    """The seed and non-default options an entry ran with (its reproduction recipe)."""
    opts = {k: v for k, v in (entry.get("options") or {}).items() if v is not None}
    seed = opts.pop("seed", entry.get("seed"))
    parts = ([f"seed {seed}"] if seed is not None else []) + [f"{k}={v}" for k, v in opts.items()]
    return ("  ran with " + " ".join(parts)) if parts else ""


def run(session: str | None = None, session_dir: str | None = None, *,
        loaded: Any = None) -> int:
    MSAApp(session, session_dir=session_dir, session=loaded).run()
    return 0
