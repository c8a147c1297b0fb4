"""Widgets: the plot view and the parameter form."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from collections import deque
from rich.text import Text
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Input, Label, OptionList, RichLog, Static

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


class WrappedLog(RichLog):
    """A ``RichLog`` whose lines wrap at its own width, also when written while it is
    hidden.  A hidden log (the Log tab while the user is on Setup) has no width, and
    ``RichLog`` then wrapped at its ``min_width``: every line a sampler wrote there stayed
    cut into 20-column pieces.  Its lines wait until it is shown again (at most
    ``max_lines`` of them); ``min_width`` is small, because beside a plot at 80 columns
    its default of 78 rendered lines wider than the log and cut them."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("wrap", True)
        kwargs.setdefault("markup", False)
        kwargs.setdefault("min_width", 20)
        super().__init__(*args, **kwargs)
        self._while_hidden: deque = deque(maxlen=self.max_lines)

    def write(self, content, *args, **kwargs):
        if self._size_known and self.scrollable_content_region.width <= 0:
            self._while_hidden.append((content, args, kwargs))
            return self
        return super().write(content, *args, **kwargs)

    def clear(self):
        self._while_hidden.clear()
        return super().clear()

    def on_resize(self, event) -> None:
        if self._while_hidden and self.scrollable_content_region.width > 0:
            pending = list(self._while_hidden)
            self._while_hidden.clear()
            for content, args, kwargs in pending:
                super().write(content, *args, **kwargs)


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


# A field is a label and an input, two cells of its panel's two-column grid (app.tcss);
# its error line (an empty label cell and the message) is mounted below it only when the
# field is first invalid (ParamForm.show_validation).  Styling and laying out widgets is
# most of the TUI's start (issue 7), ≈ 5 ms a widget on a slow host: an error line per
# field mounted up front, with a wrapper around each pair, made 115 of the Setup screen's
# 208 widgets; a Horizontal around each label and input made 27 more, and Textual's
# Select is six widgets where a Choice is one.
def field_row(section: str, key: str, value: str, placeholder: str = "") -> tuple[Widget, ...]:
    # "-valid": what an Input without validators sets on itself when given a value
    return (Label(LABELS.get(key, key), id=f"label-{section}-{key}", classes="field-label"),
            compact(Input(value, placeholder=placeholder, id=f"f-{section}-{key}",
                          select_on_focus=False, classes="field -valid" if value else "field")))


def choice_row(section: str, key: str, label: str, options, value) -> tuple[Widget, ...]:
    return (Label(label, id=f"label-{section}-{key}", classes="field-label"),
            Choice(options, value, id=f"f-{section}-{key}", classes="field"))


class ChoiceMenu(ModalScreen):
    """A Choice's options, listed under it; Enter or a click picks one, a letter moves to
    the next option that starts with it, and Escape, Tab, a click elsewhere or a resize
    of the terminal close it with the value kept.  Built only when opened."""

    DEFAULT_CSS = """
    ChoiceMenu { background: $background 0%; }
    ChoiceMenu > OptionList {
        height: auto; max-height: 12; border: tall $border; background: $surface;
        constrain: inside inside;
    }
    """
    BINDINGS = [Binding("escape,tab,shift+tab", "dismiss", "Back")]

    def __init__(self, options: tuple[str, ...], value: str, region) -> None:
        super().__init__()
        self.options, self.value, self.anchor = options, value, region
        self.opened_at = self.app.size

    def compose(self) -> ComposeResult:
        menu = OptionList(*self.options)
        # under the Choice, as wide as it, or over it where the screen ends first;
        # `constrain` keeps it on the screen when neither fits
        height = min(len(self.options), 10) + 2            # the list and its border
        y = self.anchor.bottom
        if y + height > self.app.size.height and self.anchor.y >= height:
            y = self.anchor.y - height
        menu.styles.offset = (self.anchor.x, y)
        menu.styles.width = max(self.anchor.width, 12)
        menu.highlighted = self.options.index(self.value)
        yield menu

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.options[event.option_index])

    def on_click(self, event) -> None:
        if event.widget is self:        # outside the list
            self.dismiss(None)

    def on_resize(self, event) -> None:
        # placed by the Choice's position when opened: a resize moves the Choice (a
        # screen gets a Resize when first shown too, of the size it opened at)
        if self.is_current and event.size != self.opened_at:
            self.dismiss(None)

    def on_key(self, event) -> None:
        # type to search, as Textual's Select: the next option after the highlighted one
        # that starts with the letter
        char = (event.character or "").lower()
        if not char.isprintable() or not char.strip():
            return
        menu = self.query_one(OptionList)
        n = len(self.options)
        start = menu.highlighted or 0
        for k in range(1, n + 1):
            if self.options[(start + k) % n].lower().startswith(char):
                menu.highlighted = (start + k) % n
                event.stop()
                return


class Choice(Widget, can_focus=True):
    """One value of a few, drawn on one line as "value ▼" (Textual's compact Select
    draws the same).  Enter, space, ↑, ↓ or a click opens the list; ← and → step
    through it.  Posts :class:`Choice.Changed` when the value changes (by the user or
    by code); ``with choice.prevent(Choice.Changed)`` sets it quietly."""

    COMPONENT_CLASSES = {"choice--arrow"}
    DEFAULT_CSS = """
    Choice {
        height: 1; width: 1fr; background: $surface; color: $foreground; pointer: pointer;
        &:focus { background: $primary 40%; text-style: bold; }
        & > .choice--arrow { color: $foreground 50%; }
    }
    """
    BINDINGS = [Binding("enter,space,down,up", "open", "Choose", show=False),
                Binding("left", "step(-1)", "Previous", show=False),
                Binding("right", "step(1)", "Next", show=False)]

    value: reactive[str] = reactive("", init=False)

    class Changed(Message):
        def __init__(self, choice: "Choice", value: str) -> None:
            super().__init__()
            self.choice, self.value = choice, value

        @property
        def control(self) -> "Choice":
            return self.choice

    def __init__(self, options, value: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.options = tuple(str(o) for o in options)
        self.set_reactive(Choice.value, self.validate_value(value))

    def validate_value(self, value) -> str:
        if str(value) not in self.options:
            raise ValueError(f"{value!r} is not one of {', '.join(self.options)}")
        return str(value)

    def watch_value(self, value: str) -> None:
        self.post_message(self.Changed(self, value))

    def render(self) -> Text:
        width = max(self.size.width, 4)
        return Text.assemble(self.value[:width - 3].ljust(width - 2),
                             ("▼", self.get_component_rich_style("choice--arrow")), " ")

    def action_step(self, delta: int) -> None:
        i = self.options.index(self.value)
        self.value = self.options[(i + delta) % len(self.options)]

    def action_open(self) -> None:
        if isinstance(self.app.screen, ChoiceMenu):      # a second click while it opens
            return

        def picked(value: str | None) -> None:
            if value is not None:
                self.value = value
            self.focus()
        self.app.push_screen(ChoiceMenu(self.options, self.value, self.region), picked)

    def on_click(self, event) -> None:
        event.stop()
        self.focus()
        self.action_open()


class TickBox(Checkbox):
    """A Checkbox whose mark says its state without colour: ``X`` when ticked, blank when
    not.  Textual's draws ``X`` in both states, told apart by colour alone, which a
    monochrome SSH terminal or a colour-blind user cannot read."""

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - Textual's name for the mark
        return "X" if self.value else " "


def compact_checkbox(label: str, value: bool, id: str) -> Checkbox:
    # "-on": what a checked Checkbox sets on itself
    return compact(TickBox(label, value, id=id, classes="-on" if value else ""))


class BindingsFooter(Footer):
    """Textual's Footer, recomposed only when what it shows changes.  The Footer rebuilds
    all its keys whenever the screen's bindings may have changed, which is every focus
    move: two rebuilds a Tab press between fields, ≈ 35-50 ms each on a slow host, and
    three at start (issue 7), though the keys it shows were the same.  Its keys are
    built with the screen: Textual's Footer starts empty and builds them once the
    screen reports its bindings, after the first layout, which took a second layout
    and render (≈ 0.1 s of the start on a slow host)."""

    _shown = None

    def _what_it_shows(self, screen) -> tuple:
        """All that Footer.compose reads: the shown bindings and the palette's."""
        active = screen.active_bindings
        palette = active.get(self.app.COMMAND_PALETTE_BINDING)
        return (self.show_command_palette, self.compact,
                tuple((key, b.binding, b.enabled, b.tooltip)
                      for key, b in active.items() if b.binding.show),
                palette and (palette.binding, palette.enabled, palette.tooltip))

    def compose(self):
        self._bindings_ready = True
        self._shown = self._what_it_shows(self.screen)
        yield from super().compose()

    def bindings_changed(self, screen) -> None:
        # the same test as Footer.bindings_changed for a rebuild, then what compose reads
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            if self._bindings_ready and self._what_it_shows(screen) == self._shown:
                return
        super().bindings_changed(screen)


def gamma_text(v: Validated) -> str:
    """The χ/γ line under the network fields."""
    net = v.problem.network if v.problem is not None else None
    if net is None:
        # which section keeps the problem from being built (a data error blamed the
        # network fields)
        bad = [section for section in ("network", "data") if any(k[0] == section for k in v.errors)]
        return f"χ, γ: fix the {bad[0] if bad else 'network'} fields"
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
        # the data fields' values, of every task shown since the session was loaded: a
        # field that a task passed through (← → on the task) lacks keeps what was typed
        self._data_values: dict[str, str] = dict(state.data)
        # "section-key" → its mounted error line and the empty cell left of it
        self._error_lines: dict[str, tuple[Static, Static]] = {}

    def compose(self) -> ComposeResult:
        st = self.state
        task = st.data.get("task", "linear")
        self._built_task = task
        with Vertical(id="panel-data", classes="panel") as p:
            p.border_title = "Data / task"
            yield from choice_row("data", "task", "task", TASKS, task)
            with Vertical(id="data-fields"):
                for key in model.data_keys(task):
                    yield from field_row("data", key,
                                         st.data.get(key, model.data_default(task, key)))
        with Vertical(id="panel-network", classes="panel") as p:
            p.border_title = "Network & scaling"
            yield from choice_row("network", "activation", "activation", ACTIVATIONS,
                                  st.network.get("activation", "linear"))
            for key in ("N", "g_w", "g_a", "kappa", "chi"):
                yield from field_row("network", key, st.network.get(key, ""),
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
            # the [theory] table: seed and the non-linear saddles' Monte Carlo knobs (empty:
            # the defaults).  At most 38 characters, the field's width in the two-column
            # layout at 120 columns, where a longer placeholder was cut
            yield from field_row("theory", "options", st.theory_options,
                                 placeholder="e.g. seed=1 chains=512 precision=0.03")
        with Vertical(id="panel-simulation", classes="panel") as p:
            p.border_title = "Simulation"
            yield from choice_row("simulation", "sampler", "sampler", model.SAMPLERS,
                                  st.simulation.get("sampler", "marginal"))
            yield from choice_row("simulation", "method", "method", model.METHODS,
                                  st.simulation.get("method", "mala"))
            for key in ("chains", "steps", "burn_in", "thin", "step_size", "seed"):
                yield from field_row("simulation", key, st.simulation.get(key, ""),
                                     placeholder="auto" if key == "step_size" else "")
        with Vertical(id="panel-sweep", classes="panel") as p:
            p.border_title = "Sweep (w)"
            for key in ("chi_min", "chi_max", "points", "widths"):
                yield from field_row("sweep", key, st.sweep.get(key, ""),
                                     placeholder="current N" if key == "widths" else "")
            yield compact_checkbox("simulate at each point", st.sweep_simulate, "sweep-simulate")

    # -- reading and writing -------------------------------------------------
    def read(self) -> FormState:
        st = FormState()
        task = self.query_one("#f-data-task", Choice).value
        st.data = {"task": task}
        for inp in self.query("#data-fields Input").results(Input):
            st.data[inp.id.removeprefix("f-data-")] = inp.value
        st.network = {"activation": self.query_one("#f-network-activation", Choice).value}
        for key in ("N", "g_w", "g_a", "kappa", "chi"):
            st.network[key] = self.query_one(f"#f-network-{key}", Input).value
        st.theories = [n for n in THEORIES if self.query_one(f"#th-{n}", Checkbox).value]
        st.theory_options = self.query_one("#f-theory-options", Input).value
        st.simulation = {k: self.query_one(f"#f-simulation-{k}", Choice).value
                         for k in ("sampler", "method")}
        for key in ("chains", "steps", "burn_in", "thin", "step_size", "seed"):
            st.simulation[key] = self.query_one(f"#f-simulation-{key}", Input).value
        st.simulation["chunk"] = self.state.simulation.get("chunk", "200")
        st.sweep = {k: self.query_one(f"#f-sweep-{k}", Input).value
                    for k in ("chi_min", "chi_max", "points", "widths")}
        st.sweep_simulate = self.query_one("#sweep-simulate", Checkbox).value
        st.data_extra = self.state.data_extra
        st.sweep_record = self.state.sweep_record
        self.state = st
        return st

    async def load(self, state: FormState) -> None:
        """Show ``state`` (e.g. a freshly opened session's config)."""
        self.state = state
        task_sel = self.query_one("#f-data-task", Choice)
        with task_sel.prevent(Choice.Changed):
            task_sel.value = state.data.get("task", "linear")
        await self.rebuild_data_fields(state.data.get("task", "linear"), state.data)
        with self.query_one("#f-network-activation", Choice).prevent(Choice.Changed):
            self.query_one("#f-network-activation", Choice).value = state.network.get(
                "activation", "linear")
        for key in ("N", "g_w", "g_a", "kappa", "chi"):
            self.query_one(f"#f-network-{key}", Input).value = state.network.get(key, "")
        self.query_one("#f-theory-options", Input).value = state.theory_options
        for key in ("sampler", "method"):
            self.query_one(f"#f-simulation-{key}", Choice).value = state.simulation.get(
                key, model.SIM_DEFAULTS[key])
        for key in ("chains", "steps", "burn_in", "thin", "step_size", "seed"):
            self.query_one(f"#f-simulation-{key}", Input).value = state.simulation.get(key, "")
        # the opened session's ticked theories and sweep (they kept the previous one's)
        for name in THEORIES:
            self.query_one(f"#th-{name}", Checkbox).value = name in state.theories
        for key in ("chi_min", "chi_max", "points", "widths"):
            self.query_one(f"#f-sweep-{key}", Input).value = state.sweep.get(key, "")
        self.query_one("#sweep-simulate", Checkbox).value = state.sweep_simulate
        self.post_message(self.Edited())

    async def rebuild_data_fields(self, task: str, values: dict | None = None) -> None:
        """The data fields of ``task``: with ``values`` (a session loaded), those and the
        task's defaults; without, what was typed in any task since, and the defaults."""
        box = self.query_one("#data-fields")
        if values is None:
            self._data_values.update({inp.id.removeprefix("f-data-"): inp.value
                                      for inp in box.query(Input).results(Input)})
        else:
            self._data_values = dict(values)
        # forget the error lines inside the box first: once removed their parent is None
        self._error_lines = {k: pair for k, pair in self._error_lines.items()
                             if pair[1].parent is not box}
        await box.remove_children()       # the fields and their error lines
        values = self._data_values
        await box.mount_all([w for k in model.data_keys(task) for w in field_row(
            "data", k, values.get(k) or model.data_default(task, k))])
        self._built_task = task

    def show_validation(self, v: Validated) -> None:
        # Runs on every keystroke: a Static's update asks for a layout of the screen even
        # when its text is the same (one of a keystroke's two layouts, ≈ 20 ms each on a
        # slow host), so only changed texts are set.
        wanted = {f"{section}-{key}": msg for (section, key), msg in v.errors.items()}
        for name, (gap, line) in self._error_lines.items():
            if name not in wanted:
                set_text(line, "")
                gap.display = line.display = False
        for name, msg in wanted.items():
            pair = self._error_lines.get(name)
            shown = pair is not None and pair[1].display
            mounted = None
            if pair is None:
                fields = self.query(f"#f-{name}")
                if not fields:           # no such field (yet): the data fields are rebuilding
                    continue
                field = fields.first()
                # the grid's next row: an empty label cell, then the line under the field.
                # Not one cell across both columns: Textual sizes an auto-height cell
                # that spans columns by one column's width, so a line that wraps there
                # left a blank row under it.
                pair = (Static("", classes="field-label"),
                        Static("", id=f"err-{name}", classes="field-error"))
                self._error_lines[name] = pair
                mounted = field.parent.mount_all(pair, after=field)
            gap, line = pair
            set_text(line, f"✗ {msg}")
            if not shown and any(f.has_focus_within for f in self.query(f"#f-{name}")):
                # a field at the bottom of the form showed its new error line below the
                # visible rows (the simulation seed at 80×24): bring it into view once
                # laid out — and, for a line mounted just now, once it is mounted: on a
                # slow moment the refresh came first and the scroll found no region
                self.call_later(self._scroll_into_view, line, mounted)
            gap.display = line.display = True
        for field in self.query(".field"):
            field.set_class((field.id or "").removeprefix("f-") in wanted, "bad")
        set_text(self.query_one("#gamma-view", Static), gamma_text(v))

    async def _scroll_into_view(self, line: Static, mounted) -> None:
        if mounted is not None:
            await mounted
        self.call_after_refresh(line.scroll_visible, animate=False)

    # -- events --------------------------------------------------------------
    async def on_choice_changed(self, event: Choice.Changed) -> None:
        # rebuilding the data fields only when the task differs from theirs: Textual's
        # Select reported its initial value once mounted, which cost 3 remounts at
        # startup (issue 7); a Choice reports changes only, so this is a guard
        if event.choice.id == "f-data-task" and str(event.value) != self._built_task:
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
