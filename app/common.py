"""Shared UI helpers for the lab's pages: the sidebar, cached loaders, error display.

No torch math here: every computation is a call into ``binlab``.
"""
from __future__ import annotations

import hmac
import html
import os
import re
from contextlib import contextmanager

import streamlit as st

from binlab.data import DataUnavailableError
from binlab.presets import PRESETS


def class_mode() -> bool:
    """Whether the lab serves a classroom (``binlab app --class``): shared state then needs the teacher's token."""
    return os.environ.get("BINLAB_CLASS") == "1"


def is_teacher() -> bool:
    """On one person's machine everyone is; in class mode, whoever entered the server's teacher token
    (``BINLAB_TEACHER_TOKEN``) in the sidebar."""
    if not class_mode():
        return True
    token = os.environ.get("BINLAB_TEACHER_TOKEN", "")
    given = st.session_state.get("_teacher_token", "")
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


def classroom():
    """The class this visitor belongs to (:class:`binlab.lab.classroom.ClassRoom`), or None: the server's
    class (``binlab app --class --name NAME``) or ``?class=NAME`` in the link."""
    from binlab.lab.classroom import ClassRoom

    name = st.query_params.get("class") or (os.environ.get("BINLAB_CLASS_NAME") if class_mode() else None)
    if not name:
        return None
    try:
        return ClassRoom(name)
    except ValueError as err:
        st.sidebar.warning(f"Class ignored: {err}")
        return None


def nickname() -> str | None:
    """The nickname this learner typed in the sidebar (what the class sees), or None."""
    from binlab.lab.classroom import check_nick

    try:
        return check_nick(st.session_state.get("_nickname", ""))
    except ValueError:
        return None


def teacher_only(action: str) -> bool:
    """True when this visitor may ``action`` (a shared, destructive change); else says who can."""
    if is_teacher():
        return True
    st.caption(f"Only the teacher can {action} on this server (enter the teacher token in the sidebar).")
    return False


def plain(text: str) -> str:
    """``text`` shown as itself in Markdown (a run's label is typed by a visitor: no links, no formatting)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:])", r"\\\1", str(text))


def chart_text(text: str) -> str:
    """``text`` shown as itself in a chart (plotly reads a little HTML in names and hover text)."""
    return html.escape(str(text))


def vertical_lines(fig, lines: list[tuple[float, str, dict, str]]) -> None:
    """Marked vertical lines on ``fig``, each ``(x, label, line style, where)`` (``where``: "top", "top left"
    or "top right" of the line), set in one layout update: plotly's ``add_vline`` validates the whole figure
    once per line, about four times the cost of the rest of a small chart, on the page's hot path."""
    anchor = {"top": ("center", "bottom"), "top left": ("right", "top"), "top right": ("left", "top")}
    fig.update_layout(
        shapes=[dict(type="line", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1,
                     line=style) for x, _, style, _ in lines],
        annotations=[dict(x=x, y=1, xref="x", yref="paper", text=label, showarrow=False, xanchor=anchor[where][0],
                          yanchor=anchor[where][1]) for x, label, _, where in lines])


#: Streamlit fades the parts of a page that a rerun is refreshing (after 0.5 s, over 1 s: a CSS transition on
#: each element and expander). On a live page that reruns at every slider notch, that fade makes the browser
#: draw a new frame every 16 ms while the server computes, and on a 2-core machine without a GPU the browser's
#: drawing takes CPU from the computation: bench/browser.py, one learner with Chromium on the server's cores
#: (docs/benchmarks.md). The live page keeps those parts as they are until their new version arrives; its
#: captions say what is a first look and when the server is busy.
STEADY_CSS = """<style>
[data-testid="stElementContainer"][data-stale="true"] { opacity: 1 !important; transition: none !important; }
[data-testid="stExpander"] details, [data-testid="stExpander"] summary { opacity: 1 !important; transition: none !important; }
</style>"""


def steady_page() -> None:
    """No fading of the parts a rerun refreshes (:data:`STEADY_CSS`), for a page that reruns on every move."""
    st.html(STEADY_CSS)


def newer_change_waiting() -> bool:
    """Whether this session has sent a newer change (a widget moved, a page asked for) while its run goes on.

    A widget inside an ``st.fragment`` does not interrupt a run in progress: Streamlit keeps the request and
    starts it when the run ends, so a threshold move made while the last one's numbers are still refining would
    wait for them. A long evaluation checks this (``LiveLab.apply(spec, superseded=newer_change_waiting)``) and
    stops, so the newer change runs at once. Reads the session's pending request, which Streamlit keeps
    in ``ScriptRunContext.script_requests`` (not a public API: tested against the installed Streamlit; where it
    is missing this says False and evaluations run to their end, as before)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

    requests = getattr(get_script_run_ctx(suppress_warning=True), "script_requests", None)
    return getattr(requests, "_state", None) == ScriptRequestType.RERUN


def data_source() -> str | None:
    """Where AG_NEWS comes from: the server's setting (``BINLAB_DATA``: a local folder), else the hub. A
    visitor cannot change it: a typed path would let anyone make the server read any folder."""
    return os.environ.get("BINLAB_DATA") or None


def sidebar() -> tuple[str, str | None]:
    """The preset picker (kept in session state and the URL) and the server's data source, shared by every page."""
    qp = st.query_params
    names = list(PRESETS)
    default = qp.get("preset", os.environ.get("BINLAB_PRESET", "scratch"))
    if "_preset" not in st.session_state:
        if default not in names:
            st.warning(f"Unknown preset {default!r} (from the URL or BINLAB_PRESET); using 'scratch'. Presets: {', '.join(names)}.")
        st.session_state["_preset"] = default if default in names else "scratch"
    # a widget's state does not survive a page switch: re-seed it from the page-independent choice
    st.session_state["preset"] = st.session_state["_preset"]

    def keep():
        st.session_state["_preset"] = st.session_state["preset"]

    with st.sidebar:
        st.selectbox("Model preset", names, key="preset", on_change=keep,
                     help="\n\n".join(f"**{n}**: {p.description}" for n, p in PRESETS.items()))
        src = data_source()
        st.caption("AG_NEWS: " + ("a local copy on this server" if src else "the Hugging Face hub (fancyzhx/ag_news)"),
                   help="Set by whoever starts the lab: `BINLAB_DATA=/path/to/ag_news make lab` for a local folder in the "
                        "Hugging Face layout; unset, the lab downloads it from the hub.")
        st.session_state.setdefault("_train_rows", 0)
        st.session_state["train_rows"] = st.session_state["_train_rows"]

        def keep_rows():
            st.session_state["_train_rows"] = int(st.session_state["train_rows"] or 0)
            for k in [k for k in st.session_state if str(k).startswith(("lab:", "attn_ptq:", "outcome:")) or k in ("qat_model", "deploy")]:
                del st.session_state[k]  # models of the old baseline

        st.number_input("Training rows (0: all)", min_value=0, max_value=MAX_TRAIN_ROWS, step=1000, key="train_rows", on_change=keep_rows,
                        disabled=not is_teacher(),
                        help="Train the baseline on the first N training rows. The hub's full split has 120,000 rows and "
                             "takes several times longer than the default; the Home page shows the expected time before "
                             "training. A baseline is cached per row count" + (" (in class mode the teacher sets it)." if class_mode() else "."))
        room = classroom()
        if room is not None:
            st.session_state["nick"] = st.session_state.get("_nickname", "")  # a widget's state does not survive a page switch

            def keep_nick():
                st.session_state["_nickname"] = st.session_state["nick"]

            st.text_input(f"Your nickname in class {room.name}", key="nick", on_change=keep_nick, max_chars=24,
                          placeholder="any name you like",
                          help="What the class sees beside your pinned runs and lesson answers; no real name needed.")
        if class_mode():
            st.text_input("Teacher token", type="password", key="_teacher_token",
                          help="Given by whoever started the lab; lets you retrain baselines, change the training rows and delete runs.")
    return st.session_state["_preset"], src


def train_rows() -> int | None:
    """The sidebar's training-row count (None: every row)."""
    return int(st.session_state.get("_train_rows") or 0) or None


#: the most training rows a visitor may ask for (the hub's full split), and the most data sets and baselines held at once
MAX_TRAIN_ROWS = 120_000
CACHED = 4


@st.cache_resource(show_spinner="Loading and tokenising AG_NEWS ...", max_entries=CACHED)
def _resolved(preset: str, source: str | None, rows: int | None):
    from binlab.presets import resolve

    return resolve(preset, source=source, **({"train_size": rows} if rows else {}))


def resolved_for(preset: str, source: str | None):
    """The preset resolved once for this data source and row count (its data, model config, cached
    baseline and QAT budget): :class:`binlab.presets.ResolvedPreset`, cached for the server."""
    return _resolved(preset, source, train_rows())


def splits_for(preset: str, source: str | None):
    return resolved_for(preset, source).splits


@st.cache_resource(show_spinner="Loading the cached baseline ...", max_entries=CACHED)
def _baseline(preset: str, source: str | None, rows: int | None):
    from binlab.training.train import CheckpointError

    try:
        return _resolved(preset, source, rows).cached_baseline()
    except CheckpointError as err:
        return err


def cached_baseline_for(preset: str, source: str | None):
    """The cached baseline, None when none is trained, or the CheckpointError of a damaged one (cached; cleared after training)."""
    return _baseline(preset, source, train_rows())


cached_baseline_for.clear = _baseline.clear


def damaged_checkpoint_ui(err, preset: str, source: str | None, key: str) -> None:
    """Say what is wrong with a damaged baseline checkpoint and offer to train it again (never silently)."""
    st.error(f"The cached **{preset}** baseline cannot be used: {err}")
    if teacher_only("train the baseline again") and st.button(f"Train the {preset} baseline again", key=key, type="primary"):
        train_baseline_ui(preset, source, retrain=True)
        st.rerun()


def train_baseline_ui(preset: str, source: str | None, retrain: bool = False):
    """Train the preset's baseline with a progress bar and a live loss curve, then cache it."""
    import plotly.graph_objects as go

    rp = resolved_for(preset, source)
    est = rp.estimate_seconds()
    st.caption(f"Training {len(rp.splits.train):,} rows x {rp.train_cfg.epochs:g} epochs: expected about "
               + (f"{est / 60:.1f} min" if est >= 90 else f"{est:.0f} s") + " on this machine (from timed steps).")
    bar = st.progress(0.0, text="starting ...")
    chart = st.empty()
    losses, steps = [], []

    def cb(e):
        if e["kind"] == "step":
            losses.append(e["loss"])
            steps.append(e["step"])
            bar.progress(e["step"] / e["total"], text=f"step {e['step']}/{e['total']}  loss {e['loss']:.3f}")
            if e["step"] % 25 == 0 or e["step"] == e["total"]:
                fig = go.Figure(go.Scatter(x=steps, y=losses, mode="lines", name="training loss"))
                fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), title="training loss", xaxis_title="step")
                chart.plotly_chart(fig, width="stretch", key=f"train_curve_{e['step']}")
        elif e["kind"] == "eval":
            st.write(f"step {e['step']}: validation {e['metric'].name} **{e['metric'].text()}**")

    model, meta = rp.baseline(callback=cb, retrain=retrain)
    cached_baseline_for.clear()
    bar.progress(1.0, text="done: baseline trained and cached")
    return model, meta


def require_baseline(preset: str, source: str | None):
    """Return (splits, model) or stop the page with a message and a button to train it."""
    splits = splits_for(preset, source)
    hit = cached_baseline_for(preset, source)
    if isinstance(hit, Exception):
        damaged_checkpoint_ui(hit, preset, source, "retrain_damaged_inline")
        st.stop()
    if hit is None:
        rows = f" on {train_rows():,} training rows" if train_rows() else ""
        st.info(f"No trained **{preset}** baseline{rows} yet. Train it once (it is cached on disk for every later visit).")
        if teacher_only("train a baseline") and st.button(f"Train the {preset} baseline", key="train_baseline_inline"):
            train_baseline_ui(preset, source)
            st.rerun()
        st.stop()
    return splits, hit[0]


@contextmanager
def friendly_errors():
    """Turn anything a user can trigger into an ``st.error`` with what to do, never a traceback."""
    try:
        yield
    except DataUnavailableError as err:
        st.error(str(err))
    except ValueError as err:
        st.error(f"Invalid input: {err}")
    except ArithmeticError as err:  # training diverged (FloatingPointError from binlab.training.train)
        st.error(f"Training diverged: {err}. Try a smaller learning rate or more warm-up.")
    except (RuntimeError, OSError) as err:
        st.error(f"Something went wrong: {err}. Try another setting, or retrain the baseline on the Home page.")


def session_models(preset: str, source: str | None) -> dict:
    """The binarized models this session holds, by the label pages offer them under: the Train page's
    last QAT model and the Binarize page's current configuration, where they exist."""
    out = {}
    if "qat_model" in st.session_state:  # a learner's own trained model comes first: pages offer it by default
        out["the model trained on Train (QAT)"] = st.session_state["qat_model"]
    lab = st.session_state.get(f"lab:{preset}:{source}")
    if lab is not None:
        out["the configuration on Binarize (live)"] = lab.model
    return out
