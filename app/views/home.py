"""Home: what the lab is, where the data comes from, which presets exist, and the baseline."""
import plotly.graph_objects as go
import streamlit as st

from binlab.data import data_status
from binlab.methods import BINARIZERS
from binlab.presets import PRESETS

from common import cached_baseline_for, damaged_checkpoint_ui, friendly_errors, resolved_for, sidebar, splits_for, teacher_only, train_baseline_ui
from sitemap import PAGES

preset, source = sidebar()
st.title("binlab: binarize a transformer, live")
st.markdown(
    """
Binarization stores each weight in **1 bit** (+1 or -1, or two bucket means) instead of 32. This lab
lets you choose *which* parts of a small transformer to binarize — attention **Q/K/V/O**, the
**FFN**, the **embeddings**, the **head**, layer by layer — with which binarizer and
straight-through estimator, and see the exact model size change with accuracy on AG_NEWS (a text
classifier) or perplexity on AG_NEWS text (the `lm` preset, a small causal language model, where the
LLM-era methods that need data -- {calibrated} -- calibrate on training text).

**New here?** Train the baseline below, then open **Lessons** and start with lesson 1. The words the lab
uses (binarizer, STE, PTQ, QAT, W1A1, perplexity, interval ...) are explained in `docs/glossary.md`.
""".format(calibrated=", ".join(sorted({c.paper.split(", ", 1)[-1].split(":")[0] for c in BINARIZERS.values() if c.needs_calibration})))
)
st.markdown("\n".join(f"- **{title}**: {what}" for _, _, title, _, what in PAGES))


@st.cache_data(show_spinner="Checking the data source ...", ttl=600)
def status(src):
    return data_status(src)


with friendly_errors():
    st.subheader("Data")
    s = status(source)
    if s["ok"]:
        st.success(f"AG_NEWS loads from **{s['source']}** ({s['origin']}): " + ", ".join(f"{k} {v:,} rows" for k, v in s["rows"].items()))
    else:
        st.error(s["error"])
        st.stop()

    st.subheader("Model presets")
    st.dataframe([{"preset": n, "description": p.description, "epochs": p.train.epochs} for n, p in PRESETS.items()],
                 hide_index=True, width="stretch")

    st.subheader(f"Baseline: {preset}")
    splits = splits_for(preset, source)
    st.caption(f"train {len(splits.train):,} rows · validation {len(splits.val):,} · test {len(splits.test):,} · vocabulary {splits.vocab_size:,}")
    hit = cached_baseline_for(preset, source)
    if isinstance(hit, Exception):
        damaged_checkpoint_ui(hit, preset, source, "retrain_damaged")
    elif hit is None:
        st.info("Not trained yet. Training runs once and is cached on disk; later visits reuse it.")
        if teacher_only("train a baseline") and st.button(f"Train the {preset} baseline", key="train_baseline", type="primary"):
            train_baseline_ui(preset, source)
            st.rerun()
    else:
        model, meta = hit
        c1, c2, c3 = st.columns(3)
        m = resolved_for(preset, source).baseline_metric(meta)
        c1.metric(f"validation {m.name}", m.text(), help=f"on {m.rows:,} validation rows")
        c2.metric("training time", f"{meta['history']['seconds'] / 60:.1f} min")
        c3.metric("epochs", f"{meta['history']['epochs']:.1f}")
        if meta.get("loss_curve"):
            fig = go.Figure(go.Scatter(y=meta["loss_curve"], mode="lines", name="loss"))
            fig.update_layout(height=240, margin=dict(l=10, r=10, t=30, b=10), title="training loss (subsampled)")
            st.plotly_chart(fig, width="stretch")
        if teacher_only("retrain the shared baseline") and st.button("Retrain from scratch", key="retrain"):
            train_baseline_ui(preset, source, retrain=True)
            st.rerun()
