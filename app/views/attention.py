"""Attention: each head's attention map in fp32 and binarized, side by side, with its entropy."""
import math

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from binlab.lab.live import quantized_for_viewing
from binlab.methods.attention import ATTENTION, view
from binlab.nn.metric import task_info
from binlab.training.recipes import RECIPES

from common import friendly_errors, require_baseline, session_models, sidebar

preset, source = sidebar()
st.title("Attention")
st.markdown("How binarizing changes where each head looks. BiBERT's argument (Qin et al. 2022): softmax then "
            "sign leaves almost every weight at 0, a code with little information; its **Bi-Attention** keeps the keys "
            "whose score is positive, about half of them, the {0,1} code of maximal entropy. The entropy under each map "
            "is that of the query's weights normalised to sum to 1, averaged over queries (uniform over n keys: ln n).")

with friendly_errors():
    splits, baseline = require_baseline(preset, source)
    if not any(hasattr(m, "prob_quantizer") for m in baseline.modules()):
        st.info("This model has no attention: an LSTM carries the past in its recurrent state instead. Pick a transformer preset.")
        st.stop()
    if not task_info(baseline).classifies_text:
        st.info("The attention viewer looks at the classifier presets; the language model's attention is causal.")
    tok = splits.tokenizer
    samples = [tok.decode([int(i) for i in splits.test.ids[splits.test.offsets[j]:splits.test.offsets[j + 1]]]) for j in range(12)]
    c1, c2 = st.columns([3, 2])
    pick = c2.selectbox("or pick a test headline", samples, key="attn_pick")
    text = c1.text_input("Sentence", pick, key="attn_text", max_chars=400)

    held = session_models(preset, source)
    options = list(held) + [f"{name}: {r.paper} (PTQ, untrained)" for name, r in RECIPES.items() if r.spec.attn_probs]
    choice = st.selectbox("Binarized model", options, key="attn_model",
                          help="A paper's recipe without its training shows what its quantizers do to the fp32 model's attention; "
                               "train it on Train (QAT) to see what training makes of it.")
    if choice in held:
        qmodel = held[choice]
    else:
        name = choice.split(":")[0]
        key = f"attn_ptq:{preset}:{source}:{name}"
        if key not in st.session_state:
            with st.spinner(f"quantizing with {name}'s spec ..."):
                st.session_state[key] = quantized_for_viewing(baseline, RECIPES[name].spec, splits)
        qmodel = st.session_state[key]
    aq = getattr(qmodel.layers[0].attn, "prob_quantizer", None)
    st.caption(f"Attention weights of the binarized model: **{getattr(aq, 'name', 'softmax (not binarized)')}**"
               + (f"; Q/K/V: **{qmodel.layers[0].attn.qkv_quantizer['q'].name}**" if qmodel.layers[0].attn.qkv_quantizer is not None else "")
               + f". Attention quantizers available: {', '.join(sorted(ATTENTION))}.")

    fp, qv = view(baseline, tok, text), view(qmodel, tok, text)
    n_layers = len(fp["layers"])
    layer = st.radio("Layer", list(range(n_layers)), horizontal=True, key="attn_layer") if n_layers > 1 else 0
    T = len(fp["tokens"])

    ent = go.Figure()
    heads = list(range(len(fp["layers"][layer]["entropy"])))
    ent.add_bar(x=[f"h{h}" for h in heads], y=fp["layers"][layer]["entropy"], name="fp32")
    ent.add_bar(x=[f"h{h}" for h in heads], y=qv["layers"][layer]["entropy"], name="binarized")
    ent.add_hline(y=math.log(T), line_dash="dash", annotation_text=f"uniform over {T} tokens: ln {T} = {math.log(T):.2f}")
    ent.update_layout(height=260, margin=dict(l=10, r=10, t=40, b=10), barmode="group", yaxis_title="entropy (nats)",
                      title=f"Layer {layer}: attention entropy per head")
    st.plotly_chart(ent, width="stretch")

    per_row = 2
    rows = math.ceil(len(heads) / per_row)
    titles = []
    for h in heads:
        titles += [f"h{h} fp32 · H={fp['layers'][layer]['entropy'][h]:.2f}", f"h{h} binarized · H={qv['layers'][layer]['entropy'][h]:.2f}"]
    fig = make_subplots(rows=rows, cols=2 * per_row, subplot_titles=titles, horizontal_spacing=0.03, vertical_spacing=0.08 if rows > 1 else 0.1)
    labels = [f"{i}:{t}" for i, t in enumerate(fp["tokens"])]
    for h in heads:
        r, c = h // per_row + 1, 2 * (h % per_row) + 1
        for k, v in enumerate((fp, qv)):
            w = v["layers"][layer]["weights"][h]
            w = w / max(w.max(), 1e-12)  # each map on its own scale: {0,1} maps and softmax rows side by side
            fig.add_heatmap(z=w, x=labels, y=labels, coloraxis="coloraxis", row=r, col=c + k,
                            hovertemplate="query %{y}<br>key %{x}<br>weight (scaled) %{z:.3f}<extra></extra>")
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=300 * rows, margin=dict(l=10, r=10, t=40, b=10), coloraxis=dict(colorscale="Blues", showscale=False))
    st.plotly_chart(fig, width="stretch")
    st.caption("Rows are queries, columns keys, in token order (hover for the tokens): " + " ".join(fp["tokens"][:64]))
