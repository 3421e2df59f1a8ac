"""Deploy: write the current configuration as a packed file, see its size, and classify with it."""
import hashlib
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from binlab.data import cache_dir
from binlab.lab.deploy import ready_packed, ready_path
from binlab.nn.metric import task_info
from binlab.runtime import standalone
from binlab.runtime.codecs import NotPackable
from binlab.runtime.export import classify_text, file_info, load_packed, ready_specs, save_packed
from binlab.runtime.size import model_size

from common import friendly_errors, require_baseline, session_models, sidebar

preset, source = sidebar()
st.title("Deploy")
st.markdown("The sizes elsewhere in the lab are bookkeeping; here the model is written as a file that really has that "
            "size (`binlab.runtime.export`: bits, scales and whatever else each method stores, plus the fp32 rest), loaded back "
            "with no latent weights, and run: W1A1 layers through the XNOR-popcount kernel, W1A32 layers through lookup tables "
            "for a few tokens and through weights decoded tile by tile for longer inputs. The file carries its tokenizer, and "
            "runs without torch too (numpy and numba, or numpy alone), as it would on a small device.")

READY = ready_specs()  # ready-made configurations, each trained once with the preset's QAT budget and cached

with friendly_errors():
    splits, baseline = require_baseline(preset, source)
    held = session_models(preset, source)
    choice = st.selectbox("Model to export", list(held) + list(READY), key="deploy_choice",
                          help="Your own models first; the ready ones are trained once with this preset's QAT budget (a few minutes "
                               "the first time, with a progress bar), then read from the cache.")

    if st.button("Export the packed file", key="deploy_export", type="primary"):
        from binlab.runtime.export import spec_of

        try:
            if choice in held:
                model = held[choice]
                key = hashlib.sha256(f"{preset}|{source}|{choice}|{spec_of(model).to_json()}".encode()).hexdigest()[:12]
                path = cache_dir() / "exports" / f"{preset}-{key}.safetensors"
                with st.spinner("packing and writing ..."):
                    info = save_packed(model, path, tokenizer=splits.tokenizer, preset=preset)
            else:
                path = ready_path(preset, splits, choice)
                if not path.exists():
                    bar = st.progress(0.0, text="training the ready model once (QAT) ...")

                    def progress(e):
                        if e.get("kind") == "step":
                            bar.progress(e["step"] / e["total"], text=f"QAT step {e['step']}/{e['total']}  loss {e['loss']:.3f}")
                    ready_packed(preset, splits, baseline, choice, callback=progress)
                    bar.empty()
                info = file_info(path)
            packed = load_packed(path, tokenizer=splits.tokenizer)
            lite = standalone.load(path)
        except NotPackable as err:
            st.error(f"This configuration cannot be packed: {err}. Pick another method for that component.")
            st.stop()
        st.session_state["deploy"] = {"choice": choice, "info": info, "packed": packed, "lite": lite}

    dep = st.session_state.get("deploy")
    if dep is None or dep["choice"] != choice:
        st.info("Export the model to see the file's size and run it.")
        st.stop()
    info, packed, lite = dep["info"], dep["packed"], dep["lite"]
    fp32_bytes = model_size(baseline).total_bytes
    c1, c2, c3 = st.columns(3)
    c1.metric("predicted size (model_size)", f"{info['predicted_bytes'] / 1e3:,.1f} kB",
              help="The exact count of every stored bit: codes, scales, indices, and the fp32 rest")
    header = info["file_bytes"] - info["predicted_bytes"] - info["tokenizer_bytes"]
    c2.metric("file on disk", f"{info['file_bytes'] / 1e3:,.1f} kB",
              f"{info['tokenizer_bytes'] / 1e3:,.1f} kB tokenizer, {header:+,.0f} B header", delta_color="off",
              help="Beside the weights the file holds the tokenizer and a header (names, shapes, the model config and a checksum)")
    c3.metric("fp32 model", f"{fp32_bytes / 1e3:,.1f} kB", f"{100 * (1 - info['file_bytes'] / fp32_bytes):.1f} % smaller (file)",
              delta_color="off")
    st.download_button("Download the packed model (.safetensors)", data=Path(info["path"]).read_bytes(),
                       file_name=f"binlab-{preset}.safetensors", mime="application/octet-stream", key="deploy_download")
    st.caption("Run it without torch: `binlab classify binlab-" + preset + ".safetensors \"a headline\"` (or "
               "`binlab.runtime.standalone.load(path)` in Python; run `binlab runtime build` once first and it runs with numpy "
               "alone, at a peak of 40 MiB on scratch: docs/benchmarks.md); in torch, `binlab.runtime.export.load_packed(path)`. "
               "`binlab export --help` writes the same file from the command line.")

    if not task_info(baseline).classifies_text:
        st.info("The text box classifies headlines; this model does not. For a language model, use `binlab generate` on the command line.")
        st.stop()
    tok = splits.tokenizer
    sample = tok.decode([int(i) for i in splits.test.ids[splits.test.offsets[0]:splits.test.offsets[1]]])
    text = st.text_input("Type a headline", sample, key="deploy_text", max_chars=400)
    r_fp = classify_text(baseline, tok, text)
    r_pk = classify_text(packed, tok, text)
    r_lite = lite.classify_one(text)
    a, b, c = st.columns(3)
    a.metric("fp32 model", r_fp["label"], f"{r_fp['ms']:.2f} ms", delta_color="off", help="median of 5 runs, one text")
    b.metric("packed model", r_pk["label"], f"{r_pk['ms']:.2f} ms ({r_fp['ms'] / max(r_pk['ms'], 1e-9):.2f}x)", delta_color="off",
             help="median of 5 runs, one text; the whole-test-set figures are in docs/results/bench-deploy-*.md")
    c.metric("packed, without torch", r_lite["label"], f"{r_lite['ms']:.2f} ms ({r_fp['ms'] / max(r_lite['ms'], 1e-9):.2f}x)",
             delta_color="off", help="the same file run by binlab.runtime.standalone (numpy and numba): median of 5 runs, one text")
    fig = go.Figure()
    fig.add_bar(x=list(r_fp["probs"]), y=list(r_fp["probs"].values()), name="fp32")
    fig.add_bar(x=list(r_pk["probs"]), y=list(r_pk["probs"].values()), name="packed")
    fig.update_layout(barmode="group", height=280, margin=dict(l=10, r=10, t=30, b=10), yaxis_title="probability",
                      title="Class probabilities")
    st.plotly_chart(fig, width="stretch")
