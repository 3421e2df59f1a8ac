"""Lessons: a question, your prediction, the experiment run here, and a check against what it measured.

An instructor can fix the lesson and hide the picker with the URL: ``?lesson=2&lock=1``.
"""
import plotly.graph_objects as go
import streamlit as st

from binlab.lab.lessons import LESSONS, Context, check, lesson

from common import classroom, friendly_errors, nickname, require_baseline, sidebar

preset, source = sidebar()
st.title("Lessons")

with friendly_errors():
    qp = st.query_params
    locked = qp.get("lock") == "1"
    keys = list(LESSONS)
    start = keys[0]
    if "lesson" in qp:
        try:
            start = lesson(qp["lesson"]).key
        except ValueError as err:
            st.warning(f"The lesson in the URL was ignored: {err}")
            locked = False
    if locked:
        key = start
    else:
        st.session_state.setdefault("lesson_pick", start)
        key = st.selectbox("Lesson", keys, key="lesson_pick", format_func=lambda k: f"{LESSONS[k].number} · {LESSONS[k].title}")
    les = LESSONS[key]
    st.subheader(f"{les.number} · {les.title}")
    st.caption(f"Goes with the notebook `notebooks/{les.notebook}`.")
    st.markdown(f"**Question.** {les.question}")
    pred = st.radio("Your prediction (before running anything)", les.choices, index=None, key=f"pred:{key}")
    splits, baseline = require_baseline(preset, source)
    run = st.button("Run the experiment", key=f"run:{key}", type="primary", disabled=pred is None,
                    help="Predict first: the point is to find out whether your intuition holds.")
    if run:
        with st.spinner("running the experiment ..."):
            st.session_state[f"outcome:{preset}:{key}"] = (pred, les.run(Context(baseline, splits)))
        room = classroom()
        if room is not None:
            outcome_now = st.session_state[f"outcome:{preset}:{key}"][1]
            room.record_answer(key, list(outcome_now.answers), outcome_now.summary)
            if nickname():
                room.predict(nickname(), key, pred)
            else:
                st.caption(f"Type a nickname in the sidebar so your prediction counts in class {room.name}'s tally.")
    done = st.session_state.get(f"outcome:{preset}:{key}")
    if done is not None:
        said, outcome = done
        right, message = check(les, said, outcome)
        (st.success if right else st.warning)(f"You predicted **{said}**. {message}")
        st.markdown(f"**What was measured.** {outcome.summary}")
        f = outcome.figure
        if f:
            fig = go.Figure(go.Bar(x=f["x"], y=f["y"], text=[f"{v:.3g}" for v in f["y"]], textposition="outside"))
            fig.update_layout(title=f["title"], yaxis_title=f["y_title"], height=320, margin=dict(l=10, r=10, t=40, b=10))
            st.plotly_chart(fig, width="stretch")
