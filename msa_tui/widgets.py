"""Widgets: the plot view and the parameter form."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static

from msa_engine.problem import ACTIVATIONS
from msa_engine.tasks import TASKS
from msa_engine.theory import THEORIES

from . import model
from .model import LABELS, FormState, Validated
from msa_engine.plots import DEFAULT_PALETTE, Plot, render


def theme_palette(app) -> tuple[list[str], str | None]:
    """Series colours and the axis colour from the app's current theme."""
    try:
        th = app.current_theme
    except Exception:  # no app yet (rendering outside a running app)
        return list(DEFAULT_PALETTE), None
    cols = [th.primary, th.warning, th.success, th.error, th.accent, th.secondary]
    palette = [c for i, c in enumerate(cols) if c and c not in cols[:i]]
    return palette + [c for c in DEFAULT_PALETTE if c not in palette], th.foreground


class PlotView(Widget):
    """Draws a :class:`Plot` to fit the widget; redraws on resize and on theme change."""

    DEFAULT_CSS = "PlotView { height: 1fr; min-height: 8; }"

    def __init__(self, plot: Plot | None = None, **kwargs):
        super().__init__(**kwargs)
        self.plot = plot or Plot()

    def show(self, plot: Plot) -> None:
        self.plot = plot
        self.refresh()

    def on_mount(self) -> None:
        self.watch(self.app, "theme", lambda _t: self.refresh(), init=False)

    def render(self):
        palette, axis = theme_palette(self.app)
        return render(self.plot, self.size.width, self.size.height, palette, axis)


def compact(widget):
    """``widget`` (an Input, a Checkbox, a Button) in compact style, set as Textual's
    Footer sets its own.  Passed as ``compact=True``, the reactive's first assignment
    adds the class after the widget is built, and every class change restyles the
    widget at once, mounted or not (with ``-valid`` and ``-on`` below, 56 restyles and
    ≈ 0.05 s of the start on a slow host; issue 7).  Nothing else in these widgets
    reads ``compact``."""
    widget.set_reactive(type(widget).compact, True)
    widget.add_class("-textual-compact", update=False)
    return widget


# A field is one row, label and input; its error line is mounted below it only when the
# field is first invalid (ParamForm.show_validation).  An error line per field, mounted up
# front with a wrapper around each pair, made 115 of the Setup screen's 208 widgets, and
# styling widgets is most of the TUI's start (issue 7).
def field_row(section: str, key: str, value: str, placeholder: str = "") -> Horizontal:
    # "-valid": what an Input without validators sets on itself when given a value
    return Horizontal(Label(LABELS.get(key, key), classes="field-label"),
                      compact(Input(value, placeholder=placeholder, id=f"f-{section}-{key}",
                                    select_on_focus=False, classes="-valid" if value else "")),
                      id=f"row-{section}-{key}", classes="field")


def select_row(section: str, key: str, label: str, options, value) -> Horizontal:
    return Horizontal(Label(label, classes="field-label"),
                      Select([(o, o) for o in options], value=value, allow_blank=False,
                             id=f"f-{section}-{key}", compact=True),
                      id=f"row-{section}-{key}", classes="field")


def compact_checkbox(label: str, value: bool, id: str) -> Checkbox:
    # "-on": what a checked Checkbox sets on itself
    return compact(Checkbox(label, value, id=id, classes="-on" if value else ""))


class BindingsFooter(Footer):
    """Textual's Footer, recomposed only when what it shows changes.  The Footer rebuilds
    all its keys whenever the screen's bindings may have changed, which is every focus
    move: two rebuilds a Tab press between fields, ≈ 35-50 ms each on a slow host, and
    three at start (issue 7), though the keys it shows were the same."""

    _shown = None

    def bindings_changed(self, screen) -> None:
        # the same test as Footer.bindings_changed for a rebuild, then what compose reads
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            shown = (self.show_command_palette, self.compact,
                     tuple((key, b.binding, b.enabled, b.tooltip)
                           for key, b in screen.active_bindings.items()))
            if self._bindings_ready and shown == self._shown:
                return
            self._shown = shown
        super().bindings_changed(screen)


def gamma_text(v: Validated) -> str:
    """The χ/γ line under the network fields."""
    net = v.problem.network if v.problem is not None else None
    if net is None:
        return "χ, γ: fix the network fields"
    regime = ("standard" if abs(net.chi - 1) < 1e-12 else
              "mean-field" if abs(net.chi - net.N) < 1e-9 * net.N else "intermediate")
    return f"χ = {net.chi:.6g}   γ = {net.gamma:.3f}   ({regime}; χ = N^(γ−1))"


def set_text(static: Static, text: str) -> None:
    """``static.update(text)`` unless it shows ``text`` already (an update lays the
    screen out again, same text or not)."""
    if static.content != text:
        static.update(text)


class ParamForm(VerticalScroll):
    """Data/task, network & scaling, theories, simulation and sweep panels."""

    class Edited(Message):
        """Some field changed; the app re-validates."""

    def __init__(self, state: FormState, **kwargs):
        super().__init__(**kwargs)
        self.state = state
        self._built_task: str | None = None     # the task whose data fields are mounted
        self._error_lines: dict[str, Static] = {}  # "section-key" → its mounted error line

    def compose(self) -> ComposeResult:
        st = self.state
        task = st.data.get("task", "linear")
        self._built_task = task
        with Vertical(id="panel-data", classes="panel") as p:
            p.border_title = "Data / task"
            yield select_row("data", "task", "task", TASKS, task)
            with Vertical(id="data-fields"):
                for key in model.data_keys(task):
                    yield field_row("data", key, st.data.get(key, model.data_default(task, key)))
        with Vertical(id="panel-network", classes="panel") as p:
            p.border_title = "Network & scaling"
            yield select_row("network", "activation", "activation", ACTIVATIONS,
                             st.network.get("activation", "linear"))
            for key in ("N", "g_w", "g_a", "kappa", "chi"):
                yield field_row("network", key, st.network.get(key, ""),
                                placeholder="standard | mean-field | number | γ=1.5"
                                if key == "chi" else "")
            with Horizontal(classes="presets"):
                # "-style-default": what a Button that is not flat sets on itself
                for label, name in (("standard χ=1", "standard"), ("mean-field χ=N", "mean-field"),
                                    ("γ=1.5", "gamma")):
                    yield compact(Button(label, id=f"preset-{name}", classes="-style-default"))
            # its text from the start: set by the first validation, after the first
            # layout, it would lay the screen out again (issue 7)
            yield Static(gamma_text(model.validate(st)), id="gamma-view")
        with Vertical(id="panel-theories", classes="panel") as p:
            p.border_title = "Theories"
            for name in THEORIES:
                yield compact_checkbox(name, name in st.theories, f"th-{name}")
            # the [theory] table: seed and the non-linear saddles' Monte Carlo knobs
            yield field_row("theory", "options", st.theory_options,
                            placeholder="defaults; e.g. seed=1 chains=512 precision=0.03")
        with Vertical(id="panel-simulation", classes="panel") as p:
            p.border_title = "Simulation"
            yield select_row("simulation", "sampler", "sampler", model.SAMPLERS,
                             st.simulation.get("sampler", "marginal"))
            yield select_row("simulation", "method", "method", model.METHODS,
                             st.simulation.get("method", "mala"))
            for key in ("chains", "steps", "burn_in", "thin", "step_size", "seed"):
                yield field_row("simulation", key, st.simulation.get(key, ""),
                                placeholder="auto" if key == "step_size" else "")
        with Vertical(id="panel-sweep", classes="panel") as p:
            p.border_title = "Sweep (w)"
            for key in ("chi_min", "chi_max", "points", "widths"):
                yield field_row("sweep", key, st.sweep.get(key, ""),
                                placeholder="current N" if key == "widths" else "")
            yield compact_checkbox("simulate at each point", st.sweep_simulate, "sweep-simulate")

    # -- reading and writing -------------------------------------------------
    def read(self) -> FormState:
        st = FormState()
        task = self.query_one("#f-data-task", Select).value
        st.data = {"task": task}
        for inp in self.query("#data-fields Input").results(Input):
            st.data[inp.id.removeprefix("f-data-")] = inp.value
        st.network = {"activation": self.query_one("#f-network-activation", Select).value}
        for key in ("N", "g_w", "g_a", "kappa", "chi"):
            st.network[key] = self.query_one(f"#f-network-{key}", Input).value
        st.theories = [n for n in THEORIES if self.query_one(f"#th-{n}", Checkbox).value]
        st.theory_options = self.query_one("#f-theory-options", Input).value
        st.simulation = {k: self.query_one(f"#f-simulation-{k}", Select).value
                         for k in ("sampler", "method")}
        for key in ("chains", "steps", "burn_in", "thin", "step_size", "seed"):
            st.simulation[key] = self.query_one(f"#f-simulation-{key}", Input).value
        st.simulation["chunk"] = self.state.simulation.get("chunk", "200")
        st.sweep = {k: self.query_one(f"#f-sweep-{k}", Input).value
                    for k in ("chi_min", "chi_max", "points", "widths")}
        st.sweep_simulate = self.query_one("#sweep-simulate", Checkbox).value
        st.data_extra = self.state.data_extra
        self.state = st
        return st

    async def load(self, state: FormState) -> None:
        """Show ``state`` (e.g. a freshly opened session's config)."""
        self.state = state
        task_sel = self.query_one("#f-data-task", Select)
        with task_sel.prevent(Select.Changed):
            task_sel.value = state.data.get("task", "linear")
        await self.rebuild_data_fields(state.data.get("task", "linear"), state.data)
        with self.query_one("#f-network-activation", Select).prevent(Select.Changed):
            self.query_one("#f-network-activation", Select).value = state.network.get(
                "activation", "linear")
        for key in ("N", "g_w", "g_a", "kappa", "chi"):
            self.query_one(f"#f-network-{key}", Input).value = state.network.get(key, "")
        self.query_one("#f-theory-options", Input).value = state.theory_options
        for key in ("sampler", "method"):
            self.query_one(f"#f-simulation-{key}", Select).value = state.simulation.get(
                key, model.SIM_DEFAULTS[key])
        for key in ("chains", "steps", "burn_in", "thin", "step_size", "seed"):
            self.query_one(f"#f-simulation-{key}", Input).value = state.simulation.get(key, "")
        self.post_message(self.Edited())

    async def rebuild_data_fields(self, task: str, values: dict | None = None) -> None:
        box = self.query_one("#data-fields")
        old = {**{inp.id.removeprefix("f-data-"): inp.value
                  for inp in box.query(Input).results(Input)}, **(values or {})}
        # forget the error lines inside the box first: once removed their parent is None
        self._error_lines = {k: w for k, w in self._error_lines.items() if w.parent is not box}
        await box.remove_children()       # the fields and their error lines
        await box.mount_all([field_row("data", k, old.get(k) or model.data_default(task, k))
                             for k in model.data_keys(task)])
        self._built_task = task

    def show_validation(self, v: Validated) -> None:
        # Runs on every keystroke: a Static's update asks for a layout of the screen even
        # when its text is the same (one of a keystroke's two layouts, ≈ 20 ms each on a
        # slow host), so only changed texts are set.
        wanted = {f"{section}-{key}": msg for (section, key), msg in v.errors.items()}
        for name, line in self._error_lines.items():
            if name not in wanted:
                set_text(line, "")
                line.display = False
        for name, msg in wanted.items():
            line = self._error_lines.get(name)
            if line is None:
                rows = self.query(f"#row-{name}")
                if not rows:             # no such field (yet): the data fields are rebuilding
                    continue
                row = rows.first()
                line = Static("", id=f"err-{name}", classes="field-error")
                self._error_lines[name] = line
                row.parent.mount(line, after=row)
            set_text(line, f"✗ {msg}")
            line.display = True
        for field in self.query(".field Input, .field Select"):
            field.set_class((field.id or "").removeprefix("f-") in wanted, "bad")
        set_text(self.query_one("#gamma-view", Static), gamma_text(v))

    # -- events --------------------------------------------------------------
    async def on_select_changed(self, event: Select.Changed) -> None:
        # every Select reports its initial value once mounted: rebuilding the data
        # fields for the task they already show cost 3 remounts at startup (issue 7)
        if event.select.id == "f-data-task" and str(event.value) != self._built_task:
            await self.rebuild_data_fields(str(event.value))
        self.post_message(self.Edited())

    def on_input_changed(self, event: Input.Changed) -> None:
        self.post_message(self.Edited())

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.post_message(self.Edited())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        chi = self.query_one("#f-network-chi", Input)
        chi.value = {"preset-standard": "standard", "preset-mean-field": "mean-field",
                     "preset-gamma": "γ=1.5"}.get(event.button.id or "", chi.value)
