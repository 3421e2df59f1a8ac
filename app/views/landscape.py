"""Loss landscape: why binary networks are hard to train, on the current model and configuration."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from binlab.methods import PAGE_DEFAULTS
from binlab.nn.quantize import QuantSpec
from binlab.probes.landscape import committed_curvature, curvature, interpolate, precision_ladder, slice_model
from binlab.training.calibration import calibration_set

from common import friendly_errors, require_baseline, resolved_for, sidebar

preset, source = sidebar()
st.title("Loss landscape")
st.markdown("Probes of the loss surface around the model. The binarized configuration comes from **Binarize (live)**. "
            "Slices follow Li et al. 2018 (filter-normalised random directions).")
_cv = committed_curvature("scratch")
if _cv is not None:
    _rel = "below" if _cv["binary"] < _cv["fp32"] else "above"
    st.info(f"BinaryBERT (Bai et al. 2021) reports that a fully binarized BERT has a steeper, more irregular loss landscape. "
            f"On our `scratch` model we measured the top Hessian eigenvalue of the binarized model ({_cv['binary_label']}: "
            f"{_cv['binary']:.1f}) **{_rel}** fp32's ({_cv['fp32']:.1f}) ({_cv['file']}). That curvature is taken on the latent "
            "weights through the STE, i.e. of the surrogate that training follows; the binarized loss itself is piecewise "
            "constant in the latent weights. Measure your own configuration in the curvature tab.")


def cached(key, fn):
    store = st.session_state.setdefault("landscape_cache", {})
    if key not in store:
        store[key] = fn()
    return store[key]


with friendly_errors():
    splits, baseline = require_baseline(preset, source)
    spec_json = st.session_state.get("spec_json") or st.query_params.get("spec")
    spec = QuantSpec.from_json(spec_json) if spec_json else QuantSpec()
    if not spec.rules:  # nothing chosen on Binarize yet: every encoder linear with the page's default method
        spec = QuantSpec.simple("encoder", PAGE_DEFAULTS["landscape"])
    st.caption("Binarized configuration: " + ", ".join(f"`{r.target}`→{r.method.method}" for r in spec.rules[:6])
               + (" …" if len(spec.rules) > 6 else ""))
    calib = calibration_set(splits)  # training rows, for methods that need data (GPTQ, PB-LLM, BiLLM ...)
    probe = resolved_for(preset, source).preset
    rows = st.select_slider("evaluation rows (fixed batch set)", sorted({64, 128, 256, 512, probe.probe_rows}), value=probe.probe_rows, key="ls_rows")
    t1, t2, t3, t4 = st.tabs(["1-D: fp → binary", "2-D slice", "precisions compared", "curvature"])

    with t1:
        if st.button("Interpolate", key="ls_interp"):
            bar = st.progress(0.0)
            out = cached(("interp", preset, spec.to_json(), rows), lambda: interpolate(
                baseline, spec, splits.val, alphas=np.linspace(-0.5, 1.5, 21), rows=rows, callback=lambda i, n: bar.progress(i / n), calib=calib))
            fig = go.Figure()
            fig.add_scatter(x=out["alphas"], y=out["loss"][0], name="loss", mode="lines+markers")
            fig.add_scatter(x=out["alphas"], y=100 * out["accuracy"][0], name="accuracy %", mode="lines+markers", yaxis="y2")
            fig.add_vline(x=0, line_dash="dot", annotation_text="fp32")
            fig.add_vline(x=1, line_dash="dot", annotation_text="binarized")
            fig.update_layout(height=360, xaxis_title="alpha: w + alpha (Q(w) - w)", yaxis_title="loss",
                              yaxis2=dict(overlaying="y", side="right", title="accuracy %"), margin=dict(l=10, r=10, t=30, b=10))
            st.plotly_chart(fig, width="stretch", key="interp_plot")

    with t2:
        c1, c2 = st.columns(2)
        steps = c1.slider("grid size", 5, 21, probe.probe_grid, 2, key="ls_steps")
        span = c2.slider("span (filter-normalised units)", 0.1, 2.0, 1.0, 0.1, key="ls_span")
        if st.button("Compute 2-D slices (fp32 and binarized)", key="ls_2d"):
            cols = st.columns(2)
            for col, (name, sp) in zip(cols, (("fp32", None), ("binarized", spec))):
                bar = col.progress(0.0, text=name)
                out = cached(("2d", preset, name, sp.to_json() if sp else "", steps, span, rows), lambda: slice_model(
                    baseline, splits.val, sp, steps=steps, span=span, rows=rows, callback=lambda i, n: bar.progress(i / n, text=f"{name}: {i}/{n}"),
                    calib=calib))
                fig = go.Figure(go.Surface(x=out["alphas"], y=out["betas"], z=out["loss"], colorscale="Viridis"))
                fig.update_layout(title=f"{name}: loss surface", height=420, margin=dict(l=0, r=0, t=40, b=0))
                col.plotly_chart(fig, width="stretch", key=f"surf_{name}")
                ct = go.Figure(go.Contour(x=out["alphas"], y=out["betas"], z=out["loss"], colorscale="Viridis"))
                ct.update_layout(height=300, margin=dict(l=0, r=0, t=10, b=0))
                col.plotly_chart(ct, width="stretch", key=f"contour_{name}")

    with t3:
        st.write("The same filter-normalised random direction through four versions of the same weights"
                 " (and, after a run on **Train (QAT)**, through the QAT model: before/after QAT).")
        if st.button("Compare fp32 / 2-bit / ternary / binary", key="ls_cmp"):
            versions = precision_ladder(spec)
            fig = go.Figure()
            bar = st.progress(0.0)
            for k, (name, sp) in enumerate(versions.items()):
                out = cached(("1d", preset, name, sp.to_json() if sp else "", rows), lambda: slice_model(
                    baseline, splits.val, sp, steps=21, span=1.0, two_d=False, rows=rows, calib=calib))
                bar.progress((k + 1) / len(versions), text=name)
                fig.add_scatter(x=out["alphas"], y=out["loss"][0], name=name, mode="lines+markers")
            qat_model = st.session_state.get("qat_model")
            if qat_model is not None:
                out = slice_model(qat_model, splits.val, None, steps=21, span=1.0, two_d=False, rows=rows)
                fig.add_scatter(x=out["alphas"], y=out["loss"][0], name="binary after QAT", mode="lines+markers", line=dict(dash="dash"))
            fig.update_layout(height=380, xaxis_title="step along a random direction", yaxis_title="loss", margin=dict(l=10, r=10, t=30, b=10))
            st.plotly_chart(fig, width="stretch", key="cmp_plot")

    with t4:
        st.write("Top Hessian eigenvalue (Lanczos with full reorthogonalisation on Hessian-vector products) and the trace (Hutchinson, ± standard error). "
                 "For the binarized model these are taken on the latent weights through the STE.")
        if st.button("Estimate curvature", key="ls_curv"):
            res = []
            for name, sp in (("fp32", None), ("binarized", spec)):
                with st.spinner(f"{name} ..."):
                    c = cached(("curv", preset, name, sp.to_json() if sp else "", rows), lambda: curvature(
                        baseline, splits.val, sp, rows=min(rows, 256), iters=10, trace_samples=5, calib=calib))
                res.append({"model": name, "top eigenvalue": c["top_eigenvalues"][0], "trace": c["trace"], "trace ± se": c["trace_se"]})
            st.dataframe(res, hide_index=True, width="stretch")
