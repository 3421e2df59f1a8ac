"""Compare: pinned runs (PTQ or QAT) side by side, kept across sessions in the run store."""
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from binlab.data import CLASSES
from binlab.lab.runs import RunStore, export_json, import_json, measure
from binlab.runtime.export import spec_of

from common import chart_text, classroom, friendly_errors, nickname, plain, require_baseline, session_models, sidebar, teacher_only

preset, source = sidebar()
st.title("Compare runs")
st.markdown("Pin a configuration to keep its numbers; QAT runs from the Train page are kept automatically. Runs live in "
            "a small database in the cache folder, so they survive the session; download them as JSON to share, upload to merge. "
            "Each accuracy is on the validation rows shown, with its 95 % interval: two runs whose intervals overlap may not "
            "differ at all.")

with friendly_errors():
    splits, baseline = require_baseline(preset, source)
    store = RunStore()
    held = session_models(preset, source)
    c1, c2 = st.columns([3, 2])
    with c1:
        if held:
            pick = st.selectbox("Pin", list(held), key="cmp_pick")
            name = st.text_input("Label", value="", key="cmp_label", placeholder="e.g. bucket on QK, tau 0.3", max_chars=80)
            if st.button("Pin this run", key="cmp_pin", type="primary"):
                spec_json = spec_of(held[pick]).to_json()
                with st.spinner("measuring on the validation rows ..."):
                    run = store.add(measure(held[pick], baseline, splits.val, preset=preset,
                                            mode="PTQ" if pick.startswith("the configuration") else "QAT",
                                            label=name or pick.replace("the ", ""), spec_json=spec_json))
                st.success(f"Pinned as `{run.id}`.")
                room = classroom()
                if room is not None:
                    if nickname():
                        room.pin(nickname(), run)
                        st.caption(f"Shared with class {room.name} as {plain(nickname())}.")
                    else:
                        st.caption(f"Type a nickname in the sidebar to share your pins with class {room.name}.")
        else:
            st.info("Nothing to pin in this session yet: choose a configuration on **Binarize (live)** or train one on **Train (QAT)**.")
    with c2:
        up = st.file_uploader("Import runs (JSON)", type=["json"], key="cmp_upload")
        if up is not None and st.session_state.get("_cmp_uploaded") != up.file_id:
            st.session_state["_cmp_uploaded"] = up.file_id
            try:
                runs_in = import_json(up.getvalue())
                renamed = sum(store.add(r).id != r.id for r in runs_in)  # a run already here is kept; the import gets a new id
                st.success(f"Imported {len(runs_in)} run(s)" + (f"; {renamed} had the id of a stored run and got a new one." if renamed else "."))
            except ValueError as err:
                st.error(f"That file was not imported: {err}")

    runs = store.list(preset)
    if store.skipped:
        st.warning(f"{store.skipped} stored run(s) could not be read (damaged, or written by a newer binlab) and are not shown.")
    if not runs:
        st.info(f"No runs for the **{preset}** preset yet.")
        st.stop()
    by_id = {r.id: r for r in runs}
    chosen = st.multiselect("Runs to compare", list(by_id), default=list(by_id)[-3:], key="cmp_runs",
                            format_func=lambda i: f"{by_id[i].label} · {by_id[i].mode} · {by_id[i].created}")
    sel = [by_id[i] for i in chosen]
    if not sel:
        st.stop()
    st.dataframe([{"run": r.id, "label": r.label, "mode": r.mode, r.metric.name: round(r.metric.value, 2),
                   "top-1 accuracy %": round(r.accuracy, 2), "95 % interval (top-1)": f"{r.low:.1f}-{r.high:.1f}",
                   "rows": r.rows, "size kB": round(r.size_bytes / 1e3, 1), "reduction %": round(r.reduction, 2),
                   "bits / weight": round(r.bits_per_weight, 3), "when": r.created} for r in sel], hide_index=True, width="stretch")
    if len(sel) >= 2:
        a, b = sel[0], sel[1]
        overlap = a.low <= b.high and b.low <= a.high
        st.caption(f"{plain(a.label)} vs {plain(b.label)}: {a.accuracy - b.accuracy:+.2f} pts; "
                   + ("their 95 % intervals overlap, so these rows cannot tell them apart." if overlap
                      else "their 95 % intervals do not overlap."))

    fig = go.Figure()
    for r in sel:
        up, down = r.metric.error_bars()
        fig.add_scatter(x=[r.reduction], y=[r.metric.value], mode="markers", name=chart_text(r.label),
                        error_y=dict(type="data", symmetric=False, array=[up], arrayminus=[down]), marker=dict(size=11))
    name = sel[0].metric.name
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="size reduction %",
                      yaxis_title=name + sel[0].metric.unit, title=f"{name} vs size (bars: 95 % interval where there is one)")
    st.plotly_chart(fig, width="stretch")
    if all(r.per_class for r in sel):  # classifiers: per-class accuracy and confusion
        pc = go.Figure()
        for r in sel:
            pc.add_bar(x=list(r.per_class), y=list(r.per_class.values()), name=chart_text(r.label))
        pc.update_layout(barmode="group", height=300, margin=dict(l=10, r=10, t=40, b=10), yaxis_title="accuracy %",
                         title="per-class accuracy")
        st.plotly_chart(pc, width="stretch")
        cm = make_subplots(rows=1, cols=len(sel), subplot_titles=[chart_text(r.label) for r in sel])
        for i, r in enumerate(sel):
            cm.add_heatmap(z=r.confusion, x=list(CLASSES), y=list(CLASSES), coloraxis="coloraxis", row=1, col=i + 1,
                           hovertemplate="true %{y}<br>predicted %{x}<br>%{z} rows<extra></extra>")
        cm.update_yaxes(autorange="reversed")
        cm.update_layout(height=320, margin=dict(l=10, r=10, t=60, b=10), coloraxis=dict(colorscale="Blues"),
                         title="confusion matrices (rows: true class)")
        st.plotly_chart(cm, width="stretch")
    d1, d2 = st.columns(2)
    d1.download_button("Download these runs (JSON)", data=export_json(sel), file_name=f"binlab-runs-{preset}.json",
                       mime="application/json", key="cmp_download")
    if teacher_only("delete runs") and d2.button("Delete these runs", key="cmp_delete"):
        for r in sel:
            store.delete(r.id)
        st.rerun()
