"""Sensitivity: binarize one component (or one attention pair) at a time and measure the drop."""
import plotly.express as px
import streamlit as st

from binlab.lab.live import layout, sensitivity
from binlab.methods import BINARIZERS, PAGE_DEFAULTS
from binlab.nn.quantize import MethodConfig
from binlab.training.calibration import calibration_set

from common import friendly_errors, require_baseline, sidebar

preset, source = sidebar()
st.title("Sensitivity")
st.markdown("Each bar binarizes **only** the named component (or pair, or group) with the chosen method, "
            "post-training, and measures it on the validation rows. The student project this lab reproduces reported QK as "
            "the cheapest attention pair to binarize and the head as the most damaging component (binarizing it too fell "
            "to chance). After QAT on our `scratch` model the committed tables disagree: every pair costs 1.5-2.5 points "
            "against fp32 and the three cannot be told apart (QK -2.53 [-4.24, -0.82], QV -1.46 [-2.08, -0.85], KV -1.59 "
            "[-2.74, -0.44]; 3 seeds, `docs/results/T4-scratch.md`), and "
            "binarizing the head too kept 75.12 % (one seed, `docs/results/T3-scratch.md`). See what post-training "
            "binarization says here.")

with friendly_errors():
    splits, baseline = require_baseline(preset, source)
    method = st.selectbox("Binarizer", sorted(BINARIZERS), index=sorted(BINARIZERS).index(PAGE_DEFAULTS["sensitivity"]), key="sens_method")
    key = f"sens:{preset}:{source}:{method}"
    if st.button("Run the sweep", key="run_sweep", type="primary") or key in st.session_state:
        if key not in st.session_state:
            bar = st.progress(0.0)
            st.session_state[key] = sensitivity(baseline, splits.val, MethodConfig(method), calib=calibration_set(splits),
                                                callback=lambda i, n, lbl: bar.progress(i / n, text=f"{i}/{n}: {lbl}"))
        rows = st.session_state[key]
        m0 = rows[0]["metric"]
        bars = [{"label": r["label"], "kind": r["kind"], "target": r["target"], m0.name: r["metric"].value,
                 "err_plus": r["metric"].error_bars()[0], "err_minus": r["metric"].error_bars()[1],
                 "reduction_percent": r["reduction_percent"], "within_noise": r["within_noise"]} for r in rows]
        fig = px.bar(bars, x="label", y=m0.name, color="kind", hover_data=["target", "reduction_percent", "within_noise"],
                     error_y="err_plus", error_y_minus="err_minus", log_y=m0.log_scale,
                     title=f"validation {m0.name} with one part binarized ({method}, PTQ; bars: 95 % interval)")
        fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), xaxis_title=None, yaxis_title=m0.name + m0.unit)
        st.plotly_chart(fig, width="stretch")
        n_layers = len(layout(baseline)["layers"])
        comp = [r for r in rows if r["kind"] == "component" and r["label"].startswith("L")]
        parts = sorted({r["label"].split(" ", 1)[1] for r in comp}, key=lambda p: ["Q", "K", "V", "O", "FFN up", "FFN down"].index(p))
        grid = [[next(r["metric"].cost() for r in comp if r["label"] == f"L{i} {p}") for p in parts] for i in range(n_layers)]
        hm = px.imshow(grid, x=parts, y=[f"layer {i}" for i in range(n_layers)], color_continuous_scale="Reds", text_auto=".2f",
                       labels=dict(color=m0.cost_label()), title=f"{m0.cost_label()} per component")
        hm.update_layout(height=140 + 60 * n_layers, margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(hm, width="stretch")
        st.caption("drop_low/drop_high: the paired 95 % interval of the drop against fp32 on the same rows; "
                   "within_noise: the interval contains 0, so this change is not measurable on these rows.")
        st.dataframe([{k: v for k, v in r.items() if k != "metric"} for r in rows], hide_index=True, width="stretch")
