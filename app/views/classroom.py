"""Class: the whole class at a glance, live. Every learner's pinned runs on one chart, the tallies of
the lesson predictions (the measured answer hidden until the teacher reveals it), and the best runs."""
import json
from collections import Counter

import plotly.graph_objects as go
import streamlit as st

from binlab.lab.lessons import LESSONS

from common import chart_text, classroom, friendly_errors, is_teacher, plain, sidebar

#: how often the class view reads the store again: a pin shows within this (the target is 2 s); the read is one
#: indexed SQLite query, cheap beside a learner's evaluation
REFRESH_S = 1.5

preset, source = sidebar()
st.title("Class")

room = classroom()
if room is None:
    st.info("No class on this server. The teacher starts one with `binlab app --class --name NAME` "
            "(or adds `?class=NAME` to the lab's link); learners then pick a nickname in the sidebar, and what they pin "
            "on **Compare runs** and answer on **Lessons** appears here.")
    st.stop()

st.caption(f"Class **{plain(room.name)}** · refreshes every {REFRESH_S:g} seconds")


def method_of(spec_json: str) -> str:
    """The method of a run's first rule (the colour on the chart)."""
    try:
        rules = json.loads(spec_json).get("rules") or []
        return rules[0]["method"]["method"] if rules else "fp32"
    except (ValueError, KeyError, TypeError, IndexError):
        return "?"


@st.fragment(run_every=REFRESH_S)
def live():
    with friendly_errors():
        pins = room.pins(preset)
        counts = Counter(nick for nick, _ in pins)
        st.caption(f"Learners so far: {len(room.learners())} · pinned runs ({preset}): "
                   + (", ".join(f"{plain(n)} ({c})" for n, c in sorted(counts.items())) if counts else "none yet"))
        st.subheader(f"Pinned runs ({preset})")
        if not pins:
            st.info(f"No pinned runs for the **{preset}** preset yet: learners pin them on **Compare runs**.")
        else:
            fig = go.Figure()
            by_method: dict[str, list] = {}
            for nick, run in pins:
                by_method.setdefault(method_of(run.spec), []).append((nick, run))
            for method, items in sorted(by_method.items()):
                m = [r.metric for _, r in items]
                up = [(x.high - x.value) if x.high is not None else 0 for x in m]
                down = [(x.value - x.low) if x.low is not None else 0 for x in m]
                fig.add_scatter(x=[r.reduction for _, r in items], y=[x.value for x in m], mode="markers", name=chart_text(method),
                                text=[chart_text(f"{n}: {r.label}") for n, r in items], hovertemplate="%{text}<br>%{x:.1f} %, %{y:.2f}",
                                error_y=dict(type="data", symmetric=False, array=up, arrayminus=down), marker=dict(size=10))
            metric = pins[0][1].metric
            fig.update_layout(xaxis_title="size reduction (%)", yaxis_title=f"{metric.name}{' (' + metric.unit.strip() + ')' if metric.unit.strip() else ''}",
                              height=420, margin=dict(l=10, r=10, t=30, b=10), legend_title="method")
            if metric.log_scale:
                fig.update_yaxes(type="log")
            st.plotly_chart(fig, width="stretch", key="class_scatter")
            st.caption("Error bars: each run's 95 % interval on the rows it was measured on; runs whose bars overlap may not differ.")
            best = room.best(preset, 10)
            st.subheader("Best so far")
            st.dataframe([{"learner": n, "label": r.label, "mode": r.mode, r.metric.name: round(r.metric.value, 2),
                           "95 % interval": r.metric.interval_text().removeprefix("95 % interval "), "reduction %": round(r.reduction, 2),
                           "bits / weight": round(r.bits_per_weight, 3)} for n, r in best], hide_index=True, width="stretch")

        st.subheader("Lesson predictions")
        key = st.selectbox("Lesson", list(LESSONS), format_func=lambda k: f"{LESSONS[k].number} · {LESSONS[k].title}", key="class_lesson")
        les = LESSONS[key]
        tally = room.tally(key)
        counts = [tally.get(c, 0) for c in les.choices]
        fig = go.Figure(go.Bar(x=[chart_text(c) for c in les.choices], y=counts, text=counts, textposition="outside"))
        st.markdown(f"**{plain(les.question)}**")
        fig.update_layout(height=300, yaxis_title="learners", margin=dict(l=10, r=10, t=30, b=10))
        fig.update_yaxes(tick0=0, dtick=max(1, round(max(counts, default=0) / 5)))  # whole learners on the axis
        st.plotly_chart(fig, width="stretch", key="class_tally")
        shown = room.revealed(key)
        if is_teacher() and st.button("Hide the answer" if shown else "Reveal the measured answer", key=f"class_reveal:{key}"):
            shown = not shown
            room.reveal(key, shown=shown)
        measured = room.answer(key)
        if shown and measured is not None:
            accepted, summary = measured
            st.success(f"Measured: **{', '.join(plain(a) for a in accepted)}**. {plain(summary)}")
        elif shown:
            st.info("Revealed, but no learner has run this lesson's experiment yet.")
        else:
            st.caption("The measured answer is hidden until the teacher reveals it.")


live()
