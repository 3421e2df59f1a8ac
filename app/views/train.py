"""Train (QAT): fine-tune the configuration chosen on the Binarize page through the STE."""
from dataclasses import replace

import plotly.graph_objects as go
import streamlit as st

from binlab.lab.live import compare_models
from binlab.lab.runs import RunStore, measure
from binlab.methods import PAGE_DEFAULTS
from binlab.nn.quantize import QuantSpec
from binlab.runtime.size import reduction_against
from binlab.training.calibration import calibration_set
from binlab.training.qat import ptq, qat
from binlab.training.recipes import RECIPES
from binlab.training.recipes import run as run_recipe
from binlab.training.train import evaluate, save_checkpoint

from common import friendly_errors, require_baseline, resolved_for, sidebar


def save_qat(student, spec, preset, cfg, metrics):
    """Keep the QAT result on disk (safetensors + JSON with the spec), so a crash loses nothing."""
    from dataclasses import asdict

    from binlab.data import cache_dir, fingerprint

    stem = cache_dir() / "qat" / f"{preset}-{fingerprint([spec.to_json(), asdict(cfg)])}"
    save_checkpoint(student, stem, {"spec": spec.to_json(), "qat": asdict(cfg), "val_accuracy": metrics["accuracy"]})
    return stem

preset, source = sidebar()
st.title("Train (QAT)")
st.markdown("Quantization-aware training keeps the latent fp32 weights and updates them through the "
            "straight-through estimator; with **distillation** the binarized student also matches the "
            "full-precision teacher's soft predictions.")

with friendly_errors():
    splits, baseline = require_baseline(preset, source)
    spec_json = st.session_state.get("spec_json") or st.query_params.get("spec")
    if not spec_json:
        st.info("No configuration chosen on **Binarize (live)** yet, so this page starts from XNOR on every layer but the "
                "head; choose another there, or pick a paper's recipe below.")
        spec_json = QuantSpec.simple("all-except-head", PAGE_DEFAULTS["train"]).to_json()
    spec = QuantSpec.from_json(spec_json)
    if not spec.rules:
        st.info("The current configuration binarizes nothing: pick components on **Binarize (live)**.")
        st.stop()
    recipe_names = ["one stage: this configuration"] + list(RECIPES)
    st.session_state.setdefault("train_recipe", st.session_state.get("recipe") if st.session_state.get("recipe") in RECIPES else recipe_names[0])
    recipe_name = st.selectbox("Training recipe", recipe_names, key="train_recipe",
                               format_func=lambda n: n if n not in RECIPES else f"{n}: {RECIPES[n].paper}",
                               help="One QAT stage on the Binarize page's configuration, or a paper's whole recipe (its stages, "
                                    "distillation terms and, for BEBERT, boosted members); a recipe trains its own spec.")
    recipe = RECIPES.get(recipe_name)
    if recipe is not None:
        spec = recipe.spec
        st.caption(f"{len(recipe.stages)} stage(s)" + (f" × {recipe.ensemble} boosted members" if recipe.ensemble > 1 else "")
                   + ": " + " → ".join(f"{int(100 * s.frac)} % of the epochs, distilling from "
                                       + ("the fp32 model" if s.teacher == "fp" else "the previous stage")
                                       + (f" ({', '.join(f'{k} {v}' for k, v in s.qat.items())})" if s.qat else "") for s in recipe.stages))
    st.write("Configuration: " + ", ".join(f"`{r.target}` → **{r.method.method}** (STE {r.method.ste_name})" for r in spec.rules[:8])
             + (f" and {len(spec.rules) - 8} more" if len(spec.rules) > 8 else "")
             + (f"; attention {spec.attn_probs}" if spec.attn_probs else "") + (f"; Q/K/V {spec.attn_qkv}" if spec.attn_qkv else ""))
    budget = resolved_for(preset, source).qat  # the preset's QAT budget: the one its tables ran with
    c1, c2, c3 = st.columns(3)
    epochs = c1.slider("epochs", 0.1, 3.0, float(budget.train.epochs), 0.1, key="qat_epochs")
    lr = c2.select_slider("learning rate", sorted({1e-5, 3e-5, 1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 3e-3, budget.train.lr}),
                          value=budget.train.lr, key="qat_lr")
    distill = c3.slider("distillation weight", 0.0, 1.0, float(budget.train.distill), 0.1, key="qat_distill")
    rows = len(splits.train)
    st.caption(f"{rows:,} training rows × {epochs:g} epochs; progress and curves below. The defaults are the budget the "
               f"committed tables trained with on this preset ({budget.train.epochs:g} epochs, learning rate {budget.train.lr:g}, "
               f"distillation {budget.train.distill:g}).")

    if st.button("Run QAT", key="run_qat", type="primary"):
        bar = st.progress(0.0, text="quantizing ...")
        chart = st.empty()
        health_chart = st.empty()
        steps, losses, vsteps, vaccs, vname = [], [], [], [], ["validation"]
        health = []
        draws = [0]

        def draw():
            fig = go.Figure(go.Scatter(x=steps, y=losses, mode="lines", name="training loss"))
            if vaccs:
                fig.add_scatter(x=vsteps, y=vaccs, mode="lines+markers", name=vname[0], yaxis="y2")
            fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="step",
                              yaxis2=dict(overlaying="y", side="right", title=vname[0]), legend=dict(orientation="h"))
            chart.plotly_chart(fig, width="stretch", key=f"qat_curve_{draws[0]}")
            draws[0] += 1

        def draw_health():
            from plotly.subplots import make_subplots

            fig = make_subplots(rows=1, cols=3, subplot_titles=("sign flips since last point", "latent weights outside the STE's range",
                                                                "attention entropy per head (nats)"))
            xs = [h["step"] for h in health]
            for col, key in ((1, "flip"), (2, "outside_clip"), (3, "entropy")):
                for name in health[-1][key]:
                    fig.add_scatter(x=xs, y=[h[key].get(name) for h in health], mode="lines", name=name, row=1, col=col,
                                    showlegend=False, hovertemplate=f"{name}: %{{y:.3f}}<extra></extra>")
            fig.update_layout(height=260, margin=dict(l=10, r=10, t=40, b=10), title="QAT health (hover for the component)")
            health_chart.plotly_chart(fig, width="stretch", key=f"qat_health_{len(health)}")

        def cb(e):
            if "stage" in e and e["kind"] == "step":  # a recipe: progress over all its stages and members
                done = (e.get("member", 0) * e["stages"] + e["stage"] + e["step"] / e["total"]) / (e["stages"] * e.get("members", 1))
                steps.append(len(steps) + 1); losses.append(e["loss"])  # noqa: E702
                bar.progress(min(done, 1.0), text=(f"member {e['member'] + 1}/{e['members']} · " if "member" in e else "")
                             + f"stage {e['stage'] + 1}/{e['stages']} · step {e['step']}/{e['total']} · loss {e['loss']:.3f}")
                if len(steps) % 20 == 0:
                    draw()
                return
            if e["kind"] == "health":
                health.append(e)
                draw_health()
                return
            if e["kind"] == "step":
                steps.append(e["step"]); losses.append(e["loss"])  # noqa: E702
                bar.progress(e["step"] / e["total"], text=f"step {e['step']}/{e['total']} · loss {e['loss']:.3f}")
                if e["step"] % 20 == 0:
                    draw()
            else:
                vsteps.append(e["step"]); vaccs.append(e["metric"].value); vname[0] = f"validation {e['metric'].name}"  # noqa: E702
                draw()

        cfg = replace(budget, train=replace(budget.train, epochs=epochs, lr=lr, distill=distill,
                                            eval_every=max(1, int(epochs * rows / budget.train.batch_size / 4))))
        calib = calibration_set(splits)  # training rows, for methods that need data
        total_steps = max(1, int(epochs * rows / budget.train.batch_size))
        import time

        t0 = time.perf_counter()
        if recipe is None:
            student, hist = qat(baseline, spec, splits.train, cfg, val_split=splits.val.head(500), callback=cb, calib=calib,
                                health_every=max(1, total_steps // 20))
        else:
            student = run_recipe(recipe, baseline, splits.train, cfg, callback=cb, calib=calib)
        draw()
        bar.progress(1.0, text=f"done in {time.perf_counter() - t0:.0f} s")
        cmp = compare_models(student, ptq(baseline, spec, calib=calib), splits.val, reference_label="PTQ")  # the same validation rows
        after = {"accuracy": cmp["accuracy_a"]}
        m, ptq_metric = cmp["metric"], cmp["metric_b"]
        m1, m2, m3 = st.columns(3)
        m1.metric(f"validation {m.name} after QAT", m.text(), m.change_text(), delta_color=m.delta_color(), help=m.help())
        m2.metric("PTQ (no training)", ptq_metric.text(), help=ptq_metric.interval_text())
        m3.metric("size reduction", f"{reduction_against(student, baseline):.2f} %")
        st.session_state["qat_model"] = student
        stem = save_qat(student, spec, preset, cfg, after)
        run = RunStore().add(measure(student, baseline, splits.val, preset=preset, mode=recipe_name if recipe else "QAT",
                                     label=(recipe_name + ", " if recipe else "") + f"QAT {epochs} ep, KD {distill}",
                                     spec_json=spec.to_json(), extra={"epochs": epochs, "lr": lr, "distill": distill, "checkpoint": str(stem)}))
        st.success(f"Saved as run `{run.id}`: it joins the accuracy-vs-size scatter on the Binarize page and the Compare page, "
                   f"in this and later sessions. Weights (latent + spec) in `{stem}`.")
    if "qat_model" in st.session_state and st.button("Evaluate the QAT model on the full test set", key="qat_test"):
        with st.spinner("evaluating ..."):
            t = evaluate(st.session_state["qat_model"], splits.test)
        st.success(f"test {t.metric().name} **{t.metric().text()}** ({t.n:,} rows)")
