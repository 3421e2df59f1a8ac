"""Binarize (live): pick components and a method; accuracy, size and the weight histogram follow."""
import json

import plotly.graph_objects as go
import streamlit as st

from binlab.lab.gate import GATE, Superseded
from binlab.lab.live import GLANCE_PRIORITY, LiveLab, layout, spec_components, widget_representable
from binlab.lab.runs import RunStore
from binlab.methods import BINARIZERS, PAGE_DEFAULTS, method_card
from binlab.methods.activations import ACT_HELP, ACT_NAMES, QKV_HELP
from binlab.methods.attention import ATTENTION, ATTENTION_HELP
from binlab.methods.ste import STES
from binlab.nn.generate import greedy
from binlab.nn.quantize import MethodConfig, QuantSpec, Rule, plan
from binlab.seed import SEED_POINTS
from binlab.training.recipes import RECIPES
from binlab.training.train import evaluate

from common import chart_text, friendly_errors, newer_change_waiting, require_baseline, sidebar, steady_page, train_rows, vertical_lines

preset, source = sidebar()
st.title("Binarize (live)")


@st.cache_resource(show_spinner="Preparing the live lab ...")
def lab_family(_baseline, _splits, preset: str, source: str | None, rows: int | None, baseline_id: int) -> LiveLab:
    """One lab per baseline for the whole server; every session works on a clone of it (shared rows,
    baseline numbers, Hessians and measured results)."""
    # the task's rows on every change, the preset's first look, calibration rows (train only) for the methods
    # that need data (their Hessians are cached in the lab)
    return LiveLab.for_page(_baseline, _splits, preset)


def live_lab(baseline, splits) -> LiveLab:
    key = f"lab:{preset}:{source}"
    if key not in st.session_state:
        # keyed by the baseline object too: a retrained baseline gets a new family
        st.session_state[key] = lab_family(baseline, splits, preset, source, train_rows(), id(baseline)).clone()
    return st.session_state[key]


def load_spec(spec: QuantSpec, names, model, origin: str) -> None:
    """Show ``spec`` in the widgets when they can hold it; otherwise apply it as it is (per-rule
    methods, groups, binary attention) until the learner switches back to the widgets. Targets
    this model lacks are reported and left out (options outside their ranges never get here: parsing refuses them)."""
    unknown = []
    for r in spec.rules:
        try:
            plan(model, QuantSpec((r,)))
        except ValueError:
            unknown.append(r.target)
    if unknown:
        st.warning(f"The {origin} names components this model does not have, ignored: {', '.join(unknown)}. Components: {', '.join(names)}.")
        spec = QuantSpec(tuple(r for r in spec.rules if r.target not in unknown), spec.attn_probs, spec.attn_qkv, spec.attn_residual)
    if not widget_representable(spec, names):
        st.session_state["custom_spec"] = spec.to_json()
        return
    comps, m = spec_components(spec)
    st.session_state.pop("custom_spec", None)
    for n in names:
        st.session_state[f"c:{n}"] = n in comps
    if m is not None:
        st.session_state["method"] = m.method
        st.session_state["ste"] = m.ste or "(default)"
        cls = BINARIZERS[m.method]
        for k, v in (cls.defaults() | m.options).items():
            ui = cls.ui.get(k)
            if ui is None:
                continue
            if ui.get("none") is not None:
                st.session_state[f"opt:{m.method}:{k}:none"] = v is None
                if v is not None:
                    st.session_state[f"opt:{m.method}:{k}"] = v
            else:
                st.session_state[f"opt:{m.method}:{k}"] = v
        st.session_state["act"] = next((r.method.act for r in spec.rules if not r.target.startswith("embed.") and r.method.act), "none")
    st.session_state["attn_probs"] = spec.attn_probs or "softmax (fp32)"
    st.session_state["attn_qkv"] = spec.attn_qkv or "none"


def seed_widgets_from_url(names, model):
    """On the first run of a session, a spec in the URL sets the widgets (or is applied as it is).
    A spec that does not parse is reported and ignored, never a traceback."""
    if st.session_state.get("_url_loaded") or "spec" not in st.query_params:
        st.session_state["_url_loaded"] = True
        return
    st.session_state["_url_loaded"] = True
    try:
        spec = QuantSpec.from_json(st.query_params["spec"])
    except ValueError as err:
        st.warning(f"The configuration in the URL was ignored: {err}")
        return
    load_spec(spec, names, model, "URL")


def option_widgets(method: str) -> dict:
    """One widget per option the method declares in its ``ui`` (only options that change its output)."""
    cls = BINARIZERS[method]
    defaults = cls.defaults()
    out = {}
    for k, ui in cls.ui.items():
        key = f"opt:{method}:{k}"
        d = ui.get("lab_default", defaults[k])  # the schema says where the widget starts
        if ui.get("none") is not None:  # an option whose None means "let the method choose" (bucket's optimal tau)
            st.session_state.setdefault(f"{key}:none", d is None)
            auto = st.checkbox(ui["none"], key=f"{key}:none")
            st.session_state.setdefault(key, 0.0 if d is None else d)
            v = st.slider(ui["label"], ui["min"], ui["max"], step=ui["step"], key=key, disabled=auto)
            out[k] = None if auto else float(v)
            continue
        st.session_state.setdefault(key, d)
        if ui["kind"] == "bool":
            out[k] = st.checkbox(ui["label"], key=key)
        elif ui["kind"] == "float":
            out[k] = float(st.slider(ui["label"], ui["min"], ui["max"], step=ui["step"], key=key))
        elif ui["kind"] == "int":
            hi = min(ui["max"], out[ui["at_most"]]) if ui.get("at_most") in out else ui["max"]  # e.g. STBLLM's N <= M
            if st.session_state[key] > hi:
                st.session_state[key] = hi
            out[k] = int(st.number_input(ui["label"], ui["min"], hi, step=1, key=key))
        elif ui["kind"] == "choice":
            out[k] = st.select_slider(ui["label"], ui["choices"], key=key)
    return out


def method_help(name: str) -> str:
    c = method_card(name)
    return (f"**{name}** — {c['paper']}" + (f" (arXiv {c['arxiv']})" if c["arxiv"] else "") + f". {c['summary']} "
            f"Used as: {c['mode']}. Stores: {c['stores']} ({c['bits_per_weight_128x128']:.2f} bits/weight on 128 x 128). "
            "Full card: docs/methods.md.")


def set_selection(names, chosen):
    for n in names:
        st.session_state[f"c:{n}"] = n in chosen


with friendly_errors():
    splits, baseline = require_baseline(preset, source)
    steady_page()  # no fade while a slider move refreshes the numbers and charts (a laptop's CPU goes to the numbers)
    lab = live_lab(baseline, splits)
    lay = layout(lab.model)
    names = lay["embeddings"] + [n for row in lay["layers"] for _, n in row] + [lay["head"]]
    seed_widgets_from_url(names, lab.model)
    for n in names:
        st.session_state.setdefault(f"c:{n}", n.endswith("attn.q") or n.endswith("attn.k"))
    for k, v in {"method": PAGE_DEFAULTS["binarize"], "ste": "(default)", "act": "none", "attn_probs": "softmax (fp32)", "attn_qkv": "none"}.items():
        st.session_state.setdefault(k, v)

    # a widget change reruns only the fragment it is in: the sidebar, the data and the lab above are not rebuilt on
    # a move. The outer fragment holds the choice of components and method; the inner one (tuning) the method's
    # options and everything that shows results, so a threshold move redraws neither the components nor the
    # method's card. A button that changes the selection still reruns the page.
    @st.fragment
    def live_part():
        with friendly_errors():
            left, right = st.columns([5, 7], gap="large")
            with left:
                st.subheader("1 · Components")
                q1, q2, q3, q4 = st.columns([2, 3, 4, 3])  # widths by label length, so no label is cut
                if q1.button("QK", key="pick_qk", help="Q and K in every layer"):
                    set_selection(names, [n for n in names if n.endswith((".attn.q", ".attn.k"))]); st.rerun()  # noqa: E702
                if q2.button("encoder", key="pick_encoder"):
                    set_selection(names, [n for n in names if n.startswith("layers.")]); st.rerun()  # noqa: E702
                if q3.button("all but head", key="pick_all"):
                    set_selection(names, [n for n in names if n != "head"]); st.rerun()  # noqa: E702
                if q4.button("none", key="pick_none"):
                    set_selection(names, []); st.rerun()  # noqa: E702
                st.caption("Embeddings")
                ec = st.columns(len(lay["embeddings"]))
                for c, n in zip(ec, lay["embeddings"]):
                    c.checkbox(n.split(".")[1], key=f"c:{n}")
                for i, row in enumerate(lay["layers"]):
                    st.caption(f"Layer {i}")
                    for part in (row[:4], row[4:]):  # attention, then the feed-forward pair on a line of its own, so no label is cut
                        if part:
                            for c, (label, n) in zip(st.columns(max(len(part), 2)), part):
                                c.checkbox(label, key=f"c:{n}")
                st.caption(lab.info.head_label)
                st.checkbox("head", key=f"c:{lay['head']}")

                st.subheader("2 · Method")
                method = st.selectbox("Binarizer", sorted(BINARIZERS), key="method", help=method_help(st.session_state["method"]),
                                      format_func=lambda k: f"{k} — {BINARIZERS[k].paper.split(' (')[0]}")
                cls = BINARIZERS[method]
                st.caption(cls.summary())
                with st.expander(f"Method card: {method}"):
                    st.markdown(method_help(method))
                    st.code(method_card(method)["doc"], language=None)
                st.selectbox("Straight-through estimator (for QAT)", ["(default)"] + sorted(STES), key="ste",
                             help=f"default for {method}: {cls.default_ste}; " + "; ".join(f"{k}: {v.doc}" for k, v in sorted(STES.items())))
            tuning(left, right)

    @st.fragment
    def tuning(left, right):
        with friendly_errors():
            method, ste = st.session_state["method"], st.session_state["ste"]
            cls = BINARIZERS[method]
            with left:
                options = option_widgets(method)
                act = st.selectbox("Input activations", ["none"] + list(ACT_NAMES), key="act",
                                   help=f"{ACT_HELP}; in QAT the stateless kinds use the method's estimator ({cls.act_ste}); embeddings have no "
                                        "inputs to quantize")
                with st.expander("W1A1 attention: binarize the attention itself", expanded=st.session_state["attn_probs"] != "softmax (fp32)"):
                    a1, a2 = st.columns(2)
                    attn_probs = a1.selectbox("Attention weights", ["softmax (fp32)"] + sorted(ATTENTION), key="attn_probs",
                                              help=ATTENTION_HELP + " See the Attention page for the maps.")
                    attn_qkv = a2.selectbox("Q, K, V before the products", ["none"] + list(ACT_NAMES), key="attn_qkv",
                                            help=QKV_HELP)
                    rec = st.selectbox("or load a paper's W1A1 configuration", ["-"] + [n for n, r in RECIPES.items() if r.spec.attn_probs],
                                       key="recipe_pick", format_func=lambda n: n if n == "-" else f"{n}: {RECIPES[n].paper}",
                                       help="the final spec of the paper's recipe, applied post-training here; Train (QAT) runs the whole recipe")
                    if rec != "-" and st.session_state.get("_recipe_loaded") != rec:
                        st.session_state["_recipe_loaded"] = rec
                        load_spec(RECIPES[rec].spec, names, lab.model, f"{rec} recipe")
                        st.session_state["recipe"] = rec
                        st.rerun()
                chosen = [n for n in names if st.session_state[f"c:{n}"]]
                if act != "none" and any(n.startswith("embed.") for n in chosen):
                    st.warning("Embeddings have no input activations: the activation binarizer applies to linears only.")
                mc = MethodConfig(method, options=options, ste=None if ste == "(default)" else ste)
                spec_rules = []
                for n in chosen:
                    spec_rules.append((n, MethodConfig(mc.method, mc.options, mc.ste, None if n.startswith("embed.") or act == "none" else act)))
                spec = QuantSpec(tuple(Rule(n, m) for n, m in spec_rules), attn_probs=None if attn_probs == "softmax (fp32)" else attn_probs,
                                 attn_qkv=None if attn_qkv == "none" else attn_qkv)
                if st.session_state.get("custom_spec"):  # a configuration the widgets cannot show: applied as it is
                    spec = QuantSpec.from_json(st.session_state["custom_spec"])
                    st.info(f"Applying a configuration with {len(spec.rules)} rule(s)"
                            + (f" and {spec.attn_probs} attention" if spec.attn_probs else "") + (f", Q/K/V {spec.attn_qkv}" if spec.attn_qkv else "")
                            + " from the URL, a file or a paper's recipe; the widgets above are not in use.\n\n"
                            + "\n".join(f"- `{r.target}` → {r.method.method} {r.method.options or ''}" + (f", inputs {r.method.act}" if r.method.act else "")
                                        for r in spec.rules[:12]))
                    if st.button("Edit with the widgets instead", key="drop_custom"):
                        del st.session_state["custom_spec"]
                        st.rerun()

            def show_numbers(r: dict) -> None:
                m, more = r["metric"], r["more"]
                m1, m2 = st.columns(2)
                m3, m4 = st.columns(2)
                m1.metric(f"validation {m.name}" + (" (first look)" if r.get("first_look") else ""), m.text(), m.change_text(),
                          delta_color=m.delta_color(), help=m.help())
                m2.metric("model size", f"{r['megabytes']:.3f} MB", f"{r['megabytes'] - r['fp32_megabytes']:+.3f} MB", delta_color="inverse")
                m3.metric("size reduction", f"{r['reduction_percent']:.2f} %")
                m4.metric("bits / quantized weight", f"{r['bits_per_quantized_weight']:.3f}" if chosen else "-")
                for col, x in zip(st.columns(2), more):  # a classifier's loss (it moves even where no prediction flips), an LM's next-token accuracy
                    col.metric(x.name, x.text(4 if not x.unit else 2), x.change_text(), delta_color=x.delta_color(), help=x.help())
                # "change n" (from the first move on): every move shows new text, even when two configurations give the same numbers
                n = st.session_state.get("changes", 0)
                count = f"change {n}, " if n else ""
                if r.get("first_look"):
                    st.caption(f"First look: {m.caption()} · {count}the full {len(lab.val):,} rows follow in a moment · sizes are exact")
                else:
                    st.caption(f"{m.caption()} · {count}" + ("measured before on this server" if r.get("shared") else
                                                            f"updated in {r['seconds']:.2f} s")
                               + " · sizes are exact (codes, scales, means, masks and fp32 rest)")

            with right:
                st.query_params["preset"] = preset
                st.query_params["spec"] = spec.to_json()
                st.session_state["spec_json"] = spec.to_json()
                st.subheader("3 · What changed")
                if st.session_state.get("_last_spec") != spec.to_json():  # a new configuration on this page
                    st.session_state["_last_spec"] = spec.to_json()
                    st.session_state["changes"] = st.session_state.get("changes", -1) + 1
                busy = st.empty()
                numbers = st.empty()
                ahead = GATE.ahead(GLANCE_PRIORITY) if lab.measured(spec) is None else 0  # a first look comes next
                if ahead:  # a busy server: say so at once rather than freeze
                    busy.info(f"The server is busy: queued behind {ahead} change{'s' if ahead > 1 else ''} from other learners. "
                              "Your numbers follow as soon as it is their turn.")
                # a newer change by this learner stops this one's evaluation (Superseded): the page then draws what it
                # has (the first look, the charts) and ends its run, and Streamlit starts the newer change at once
                looked = r = None
                try:
                    if lab.measured(spec) is None:  # a new configuration: numbers on a small, balanced slice first, then on every row
                        looked = lab.glance(spec, superseded=newer_change_waiting)
                        with numbers.container():
                            show_numbers(looked)
                    r = lab.apply(spec, superseded=newer_change_waiting)
                except Superseded:
                    if looked is None:
                        numbers.caption("A newer change of yours is on its way.")
                points = st.session_state.setdefault("points", {})
                if r is not None:
                    with numbers.container():
                        show_numbers(r)
                    if ahead:
                        busy.caption(f"This change waited behind {ahead} other{'s' if ahead > 1 else ''} on a busy server.")
                    m = r["metric"]
                    label = ", ".join(chosen[:3]) + (f" +{len(chosen) - 3}" if len(chosen) > 3 else "") if chosen else "fp32"
                    points[spec.to_json()] = {"label": f"{label} · {method}", "reduction": r["reduction_percent"], "value": m.value,
                                              "low": m.low, "high": m.high, "source": "PTQ"}

                view_default = chosen[0] if chosen else names[0]
                comp = st.selectbox("Weight matrix to inspect", names, index=names.index(view_default), key="view")
                v = lab.view(comp, mc)
                fig = go.Figure()
                lh, qh = v["latent_hist"], v["quantized_hist"]  # binned on the server: every weight counted, a few hundred bars sent
                fig.add_bar(x=lh["centers"], y=lh["counts"], width=lh["width"], name="latent (fp32) weights", opacity=0.75)
                fig.add_bar(x=qh["centers"], y=qh["counts"], width=qh["width"], name=f"{method} values (right axis)", opacity=0.5, yaxis="y2")
                if v["threshold"] is not None:
                    vertical_lines(fig, [(v["threshold"], "threshold", dict(color="black", dash="dash"), "top")]
                                   + [(lv, nm, dict(color="crimson"), where) for lv, nm, where in zip(v["levels"], ("low mean", "high mean"), ("top left", "top right"))])
                fig.update_layout(barmode="overlay", height=320, margin=dict(l=10, r=10, t=40, b=10),
                                  title=f"{comp} {v['shape']}: relative error {v['relative_error']:.3f}, SQNR {v['sqnr_db']:.1f} dB",
                                  xaxis_title=f"weight, in {v['units']}", legend=dict(orientation="h", y=-0.25),
                                  yaxis=dict(title="latent count"), yaxis2=dict(overlaying="y", side="right", title=f"{method} count", showgrid=False))
                st.plotly_chart(fig, width="stretch")

                sc = go.Figure()
                pts = list(points.values())
                for run in RunStore().list(preset):  # QAT runs of every session, from the run store
                    if run.mode != "PTQ":
                        rm = run.metric
                        pts.append({"label": chart_text(f"{run.label} ({run.created})"), "reduction": run.reduction, "value": rm.value,
                                    "low": rm.low, "high": rm.high, "source": "QAT"})
                for src, sym in (("PTQ", "circle"), ("QAT", "diamond")):
                    ps = [p for p in pts if p["source"] == src]
                    if ps:
                        sc.add_scatter(x=[p["reduction"] for p in ps], y=[p["value"] for p in ps], mode="markers",
                                       name="this session (PTQ)" if src == "PTQ" else "QAT runs (saved)",
                                       text=[p["label"] for p in ps], marker=dict(size=9, symbol=sym),
                                       error_y=dict(type="data", symmetric=False, thickness=1,
                                                    array=[(p["high"] if p["high"] is not None else p["value"]) - p["value"] for p in ps],
                                                    arrayminus=[p["value"] - (p["low"] if p["low"] is not None else p["value"]) for p in ps]))
                if lab.info.shows_seed_points:  # the student project's reported (reduction, accuracy) points
                    sc.add_scatter(x=[p["reduction"] for p in SEED_POINTS], y=[p["accuracy"] for p in SEED_POINTS], mode="markers", name="student project (reported)",
                                   text=[p["label"] for p in SEED_POINTS], marker=dict(size=9, symbol="x", color="gray"))
                info = lab.info  # the headline metric's name and scale (a superseded change has no numbers of its own)
                sc.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10), yaxis_type="log" if info.log_scale else "linear",
                                 title=f"validation {info.metric} vs size reduction (bars: 95 % interval)",
                                 xaxis_title="size reduction %", yaxis_title=info.metric + (" (log)" if info.log_scale else info.unit))
                st.plotly_chart(sc, width="stretch")
                if lab.info.shows_seed_points:
                    st.caption("Grey crosses: what the student project reports for its own model (2 layers, a BERT tokenizer, 10 epochs "
                               "on AG_NEWS), not measured here; our baseline trains on the rows this lab loads, so compare how the "
                               "points fall with size more than their heights. Words: docs/glossary.md.")

                if lab.info.can_generate:
                    st.subheader("Generate")
                    prompt = st.text_input("Prompt (greedy continuation, fp32 and binarized side by side)", "oil prices rose on", key="prompt")
                    if prompt.strip():
                        g1, g2 = st.columns(2)
                        fp_out, q_out = greedy(baseline, splits.tokenizer, prompt, 20), greedy(lab.model, splits.tokenizer, prompt, 20)
                        g1.markdown(f"**fp32** ({1000 * fp_out['seconds']:.0f} ms)\n\n{prompt} *{fp_out['text']}*")
                        g2.markdown(f"**binarized** ({1000 * q_out['seconds']:.0f} ms)\n\n{prompt} *{q_out['text']}*")
                if st.button("Final check: evaluate on the full test set", key="eval_test", help="choose settings on the validation numbers above; the test set is for the final check of a chosen configuration (looking at it while choosing makes its number optimistic)"):
                    with st.spinner(f"evaluating {len(splits.test):,} test rows ..."):
                        t = evaluate(lab.model, splits.test)
                    st.success(f"test {t.metric().name} **{t.metric().text()}** on {t.n:,} rows" + (f" ({t.tokens:,} tokens" if t.tokens else " (")
                               + f", {t.seconds:.1f} s)")
                    if t.per_class:
                        st.dataframe([{"class": k, "accuracy %": round(100 * a, 2)} for k, a in t.per_class.items()], hide_index=True)
                with st.expander("Share this configuration"):
                    st.code("?preset=" + preset + "&spec=" + json.dumps(json.loads(spec.to_json())), language=None)
                    st.caption("The URL of this page already holds it: copy the address bar to reproduce this view.")
                    st.download_button("Download as JSON", spec.to_json(), file_name="binlab-spec.json", mime="application/json", key="spec_download")
                    up = st.file_uploader("Load a configuration (JSON: any QuantSpec, per-rule methods and groups included)", type="json", key="spec_upload")
                    if up is not None and st.session_state.get("_uploaded") != up.file_id:
                        st.session_state["_uploaded"] = up.file_id
                        try:
                            load_spec(QuantSpec.from_json(up.getvalue().decode("utf-8", "replace")), names, lab.model, "file")
                            st.rerun()
                        except ValueError as err:
                            st.warning(f"The file was ignored: {err}")

    live_part()
