"""Command line: ``binlab data | train | eval | size | export | classify | runtime | experiments | sweep | landscape | bench | methods | app``.

Examples::

    binlab data --data ../shared/ag_news
    binlab train --preset scratch
    binlab eval --preset minilm-l2 --spec '{"rules":[{"target":"QK","method":{"method":"xnor"}}]}'
    binlab size --preset scratch --target all-except-head --method bucket
    binlab export --preset scratch --target encoder --method xnor --act sign --out model.safetensors --verify
    binlab classify model.safetensors "Stocks rally as oil falls"   # no torch in this process
    binlab runtime build                # once: its kernels compiled ahead of time, no numba in that process either
    binlab experiments run T4 --preset scratch
    binlab methods recu                 # one method card; --write regenerates docs/methods.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _progress():
    from .progress import training_bar

    return training_bar()


def _spec(args):
    from .nn.quantize import MethodConfig, QuantSpec

    if getattr(args, "spec", None):
        path = Path(args.spec)
        if path.exists():
            if not path.is_file():
                raise ValueError(f"--spec {args.spec} is not a file: give a JSON file or the JSON text itself")
            if path.stat().st_size > 1_000_000:
                raise ValueError(f"--spec {args.spec} is larger than 1 MB: a configuration is a few kB of JSON")
            return QuantSpec.from_json(path.read_text(errors="replace"))
        return QuantSpec.from_json(args.spec)
    if getattr(args, "target", None):
        try:
            opts = json.loads(args.options) if args.options else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"--options is not valid JSON ({err}); write e.g. --options '{{\"tau\": 0.5}}'") from None
        if not isinstance(opts, dict):
            raise ValueError(f"--options must be a JSON object of option names and values, got {args.options!r}")
        try:
            return QuantSpec.simple(args.target, MethodConfig(args.method, options=opts, ste=args.ste, act=getattr(args, "act", None)))
        except (TypeError, KeyError, AttributeError, OverflowError) as err:  # an option of the wrong type deep in a method
            raise ValueError(f"invalid --options for {args.method}: {err}") from None
    return QuantSpec()


def _splits(p, args):
    from .presets import load_data

    rows = getattr(args, "train_rows", None)
    if rows is not None and rows < 1:
        raise ValueError(f"--train-rows must be at least 1, got {rows}")
    return load_data(p, source=args.data, **({"train_size": rows} if rows is not None else {}))


def _load(args, need_model=True):
    from .presets import get_baseline, get_preset

    p = get_preset(args.preset)
    splits = _splits(p, args)
    if not need_model:
        return p, splits, None
    model, meta = get_baseline(p, splits, callback=_progress())
    return p, splits, model


def cmd_data(args):
    from .data import data_status

    st = data_status(args.data)
    print(f"source: {st['source']}  (from {st['origin']})")
    if st["ok"]:
        print("rows: " + ", ".join(f"{k}={v}" for k, v in st["rows"].items()))
        return 0
    print(st["error"], file=sys.stderr)
    return 1


def cmd_train(args):
    from dataclasses import replace

    from .presets import cached_baseline, get_baseline, get_preset
    from .training.train import evaluate

    p = get_preset(args.preset)
    cfg = p.train if args.epochs is None else replace(p.train, epochs=args.epochs)
    splits = _splits(p, args)
    if args.retrain or cached_baseline(p, splits, cfg) is None:
        from .presets import build_model
        from .training.train import estimate_seconds

        est = estimate_seconds(build_model(p, splits, seed=cfg.seed), splits.train, cfg)
        when = f"{est / 60:.1f} min" if est >= 90 else f"{est:.0f} s"
        print(f"training {len(splits.train):,} rows x {cfg.epochs:g} epochs: expected about {when} here (from timed steps)", file=sys.stderr)
    model, meta = get_baseline(p, splits, cfg, callback=_progress(), retrain=args.retrain)
    test = evaluate(model, splits.test)
    out = {"preset": p.name, "val_accuracy": meta["val_accuracy"], "test_accuracy": test.accuracy,
           "test_per_class": test.per_class, "train_seconds": meta["history"]["seconds"], "test_eval_seconds": test.seconds}
    if test.perplexity is not None:
        out |= {"val_perplexity": meta.get("val_perplexity"), "test_perplexity": test.perplexity, "test_tokens": test.tokens}
    print(json.dumps(out, indent=2))
    return 0


def cmd_eval(args):
    from .runtime.size import model_size
    from .training.calibration import calibration_set
    from .training.qat import ptq
    from .training.train import evaluate

    spec = _spec(args)  # bad input fails before any data is loaded or a baseline trained
    p, splits, model = _load(args)
    ptq(model, spec, inplace=True, calib=calibration_set(splits))  # methods that need data use 128 training rows
    r = evaluate(model, getattr(splits, args.split))
    print(json.dumps({"split": args.split, **r.to_dict(), "size": model_size(model).summary()}, indent=2))
    return 0


BACKEND_HELP = ("auto (default): aot where `binlab runtime build` compiled the kernels on this machine, else numba; "
                "numba: the packed kernels, compiled by numba in this process; aot: the same kernels compiled ahead of time, "
                "without numba's compiler (the least memory at their speed); numpy: no compiled kernels, the binary matrices "
                "decoded to float32 at load")
BACKENDS = ("auto", "numba", "aot", "numpy")


def cmd_runtime(args):
    """Compile the torch-free runtime's kernels ahead of time for this machine (binlab.runtime.aot), or say where they are."""
    from .runtime import aot

    if args.action == "build":
        t0 = time.perf_counter()
        print("compiling the kernels for this CPU (about 10 s) ...", flush=True)
        path = aot.build(args.dir)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f} s: "
              "`binlab classify` and `binlab generate --model` now run without numba's compiler")
    else:
        path = aot.module_path(args.dir)
        print(f"{path}: {'built' if path.exists() else 'not built (run: binlab runtime build)'}")
    return 0


def cmd_classify(args):
    """Classify texts with a packed model, without torch (binlab.runtime.standalone)."""
    from .runtime.process import hold_freed_memory, keep_scipy_out
    from .runtime.standalone import load

    texts = list(args.texts)
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise ValueError(f"--file {args.file}: no such file (give a text file with one headline per line)")
        texts += [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not texts:
        raise ValueError("give one or more texts to classify, or --file with one text per line")
    keep_scipy_out()  # this process runs only the runtime: numba's start need not load scipy (15 MiB),
    hold_freed_memory()  # and glibc may keep freed arrays for the next batch
    out = load(args.model, backend=args.backend).classify(texts)
    for r in out:
        print(json.dumps(r) if args.json else f"{r['label']}\t{r['probs'][r['label']]:.3f}\t{r['text']}")
    return 0


def cmd_generate(args):
    if args.model:  # a packed language model, without torch
        from .runtime.process import hold_freed_memory, keep_scipy_out
        from .runtime.standalone import load

        keep_scipy_out()
        hold_freed_memory()
        print(json.dumps({"prompt": args.prompt, "packed": load(args.model, backend=args.backend).generate(args.prompt, args.tokens)["text"]}, indent=2))
        return 0
    from .nn.generate import greedy
    from .training.calibration import calibration_set
    from .training.qat import ptq

    spec = _spec(args)
    p, splits, model = _load(args)
    out = {"prompt": args.prompt, "fp32": greedy(model, splits.tokenizer, args.prompt, args.tokens)["text"]}
    if args.target or args.spec:
        q = ptq(model, spec, calib=calibration_set(splits))
        out["binarized"] = greedy(q, splits.tokenizer, args.prompt, args.tokens)["text"]
    print(json.dumps(out, indent=2))
    return 0


def cmd_size(args):
    from .presets import build_model, get_baseline, get_preset
    from .runtime.size import model_size
    from .training.calibration import calibration_set
    from .training.qat import ptq

    p = get_preset(args.preset)
    splits = _splits(p, args)
    spec = _spec(args)
    if any(r.method.make().needs_calibration for r in spec.rules):
        # data-dependent storage (BiLLM's salient columns) needs the trained model, quantized for real
        model = ptq(get_baseline(p, splits, callback=_progress())[0], spec, calib=calibration_set(splits))
    else:
        model = ptq(build_model(p, splits), spec, inplace=True)  # sizes depend on shapes only: no training needed
    rep = model_size(model)
    if getattr(args, "json", False):
        print(json.dumps(rep.to_dict(), indent=2))
        return 0
    print(f"{'component':<22}{'method':<11}{'params':>11}{'bits':>13}{'bits/param':>11}")
    for r in rep.rows():
        print(f"{r['component']:<22}{r['method']:<11}{r['params']:>11,}{r['total_bits']:>13,}{r['bits_per_param']:>11.3f}")
    s = rep.summary()
    print(f"total {s['megabytes']:.3f} MB (fp32 {s['fp32_megabytes']:.3f} MB), reduction {s['reduction_percent']:.2f} %, "
          f"{s['bits_per_quantized_weight']:.3f} bits per quantized weight")
    return 0


def cmd_export(args):
    from .runtime.export import check_size, load_packed, save_packed
    from .training.calibration import calibration_set
    from .training.qat import ptq

    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder: give the packed file's path, e.g. {Path(args.out) / 'model.safetensors'}")
    spec = _spec(args)
    if not spec.rules:
        raise ValueError("nothing to pack: give --target/--method or --spec (an fp32 model is exported by torch itself)")
    p, splits, model = _load(args)
    q = ptq(model, spec, calib=calibration_set(splits))
    info = save_packed(q, args.out, tokenizer=splits.tokenizer, preset=p.name)
    info["within_header"] = check_size(info)
    if args.verify:
        from .training.train import predict

        packed = load_packed(args.out, tokenizer=splits.tokenizer)
        a, _ = predict(q, splits.test)
        b, _ = predict(packed, splits.test)
        info["verify"] = {"rows": len(splits.test), "predictions_equal": float((a.argmax(1) == b.argmax(1)).mean()),
                          "max_logit_rel_diff": float(abs(a - b).max() / max(abs(a).max(), 1e-30))}
    print(json.dumps(info, indent=2))
    return 0


def cmd_experiments(args):
    from .experiments import datasize, report, tables
    from .experiments.catalog import EXPERIMENTS

    if args.action == "list":
        for name, e in EXPERIMENTS.items():
            print(f"{name:<5} {e.title}")
        return 0
    if args.action == "datasize":
        sizes = []
        for part in (args.sizes or "2000,4000,8000,all").split(","):
            if part.strip() == "all":
                sizes.append(None)
            else:
                try:
                    sizes.append(int(part))
                except ValueError:
                    raise ValueError(f"--sizes takes whole numbers or 'all', comma-separated; got {part!r}") from None
        out = datasize.data_size_curve(args.preset, sizes, seeds=args.seeds, source=args.data, fast=args.fast, callback=print,
                                       runner=args.runner, address=args.address, threads=args.threads,
                                       gpus_per_task=args.gpus_per_task)
        print(f"wrote {out}")
        return 0
    if args.action == "render":
        for path in report.render():
            print(f"wrote {path}")
        return 0
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    changes = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("distill", args.distill)) if v is not None}
    for n in names:
        try:
            only = [int(i) for i in args.only.split(",")] if args.only else None
        except ValueError:
            raise ValueError(f"--only takes configuration indices, comma-separated (e.g. 0,1,2); got {args.only!r}") from None
        out = tables.run(n, preset=args.preset, source=args.data, fast=args.fast, callback=print, only=only, seeds=args.seeds,
                              runner=args.runner, address=args.address, threads=args.threads, budget_changes=changes or None,
                              gpus_per_task=args.gpus_per_task)
        print(f"wrote {out}")
    return 0


def cmd_sweep(args):
    from .experiments import grids, sweep
    from .experiments.store import ResultStore

    tasks = grids.load_grid(args.grid, source=args.data)
    store = ResultStore(args.store) if args.store else ResultStore()
    runner = args.runner
    if runner == "auto":
        import importlib.util

        runner = "ray" if importlib.util.find_spec("ray") else "local"
        if runner == "local":
            print("Ray is not installed (pip install -e '.[cluster]'): running in this process")
    rows = sweep.run_tasks(tasks, store=store, runner=runner, address=args.address, threads=args.threads, callback=print,
                           gpus_per_task=args.gpus_per_task)
    for t, r in zip(tasks, rows):
        val = f"val {r['val_accuracy']:.2f} %" if r.get("val_accuracy") is not None else f"val ppl {r.get('val_perplexity', float('nan')):.2f}"
        test = f"  test {r['perplexity']:.2f} ppl" if r.get("perplexity") is not None else (f"  test {r['accuracy']:.2f} %" if r.get("accuracy") is not None else "")
        print(f"{t.preset:<10} {t.config.label[:60]:<60} seed {t.seed}  {val}{test}")
    print(f"{len(rows)} row(s) in {store.path}")
    if args.out:
        payload = grids.summary(tasks, rows, grid=args.grid)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(payload, indent=2))
        out.with_suffix(".md").write_text(grids.summary_markdown(payload))
        for b in payload["best_by_validation"]:
            print(f"best by validation: {b['preset']} / {b['label']}: epochs {b['epochs']:g}, lr {b['lr']:g}, distill {b['distill']:g} "
                  f"({b['val_accuracy']:.2f} %)")
        print(f"wrote {out.with_suffix('.md')}")
    return 0


def cmd_landscape(args):
    import numpy as np

    from .probes import landscape as L

    for name, low in (("rows", 1), ("steps", 2), ("k", 1)):
        if getattr(args, name) < low:
            raise ValueError(f"--{name} must be at least {low}, got {getattr(args, name)}")
    if not (args.span > 0 and args.span < float("inf")):
        raise ValueError(f"--span must be a positive finite number, got {args.span}")
    spec = _spec(args)
    spec = spec if spec.rules else None
    p, splits, model = _load(args)
    if args.probe == "interpolate":
        out = L.interpolate(model, spec or _default_spec(), splits.val, alphas=np.linspace(-0.5, 1.5, args.steps), rows=args.rows)
    elif args.probe == "slice":
        out = L.slice_model(model, splits.val, spec, steps=args.steps, span=args.span, two_d=not args.one_d, rows=args.rows, seed=args.seed)
    else:
        out = L.curvature(model, splits.val, spec, rows=args.rows, k=args.k, seed=args.seed)
    text = json.dumps({k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in out.items()}, indent=1)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def _default_spec():
    from .nn.quantize import QuantSpec

    return QuantSpec.simple("encoder", "xnor")


def cmd_bench(args):
    script = Path(__file__).resolve().parents[1] / "bench" / {"kernels": "kernels.py", "live": "live_loop.py", "landscape": "landscape.py"}[args.what]
    return subprocess.call([sys.executable, str(script), *args.rest])


METHODS_MD = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def cmd_methods(args):
    from .methods import BINARIZERS, cards_markdown, method_card

    if args.write:
        METHODS_MD.write_text(cards_markdown())
        print(f"wrote {METHODS_MD}")
        return 0
    if args.name:
        c = method_card(args.name)
        print(f"{c['name']}: {c['paper']} (arXiv {c['arxiv'] or '-'}); {c['mode']}; stores {c['stores']}; "
              f"{c['bits_per_weight_128x128']:.3f} bits/weight on 128x128\n\n{c['doc']}")
        return 0
    for name in sorted(BINARIZERS):
        c = method_card(name)
        print(f"{name:<11} {c['bits_per_weight_128x128']:6.3f} bits/w  {c['mode']:<10.10} {c['paper']}")
    return 0


#: every start, whatever config Streamlit finds: no usage statistics or error details to visitors, XSRF protection, uploads <= 5 MB
SAFE_SERVER = {"browser.gatherUsageStats": "false", "client.showErrorDetails": "none", "client.toolbarMode": "viewer",
               "server.enableXsrfProtection": "true", "server.maxUploadSize": "5"}
#: for speed: no full garbage collection after every rerun, a fragment's too (Streamlit's default; a class's final
#: numbers come sooner without it: docs/results/bench-protocol-scratch*.md); Python's own collector still runs
FAST_SERVER = {"runner.postScriptGC": "false"}
#: the server's environment unless set: glibc keeps two malloc arenas, not one per busy session thread (8 learners
#: peaked at 2.0 against 2.9 GiB, 32 at 3.4 against 3.6, one run each: docs/results/bench-protocol-scratch-memory.md)
SERVER_ENV = {"MALLOC_ARENA_MAX": "2"}


def app_command(port: int = 8501, address: str | None = None, classroom: bool = False, token: str | None = None,
                name: str = "class") -> tuple[list[str], dict]:
    """The command and the environment that start the lab: on this machine only (localhost) unless
    ``classroom`` (every address, or ``address``), where shared changes need the teacher ``token`` and the
    learners' pins and predictions go to the class ``name``'s shared store (:mod:`binlab.lab.classroom`)."""
    import secrets

    from binlab.lab.classroom import check_class_name

    if not 1 <= port <= 65535:
        raise ValueError(f"--port must be between 1 and 65535, got {port}")
    env = {}
    if classroom:
        env = {"BINLAB_CLASS": "1", "BINLAB_CLASS_NAME": check_class_name(name),
               "BINLAB_TEACHER_TOKEN": token or os.environ.get("BINLAB_TEACHER_TOKEN") or secrets.token_urlsafe(12)}
    where = address or ("0.0.0.0" if classroom else "localhost")
    app = Path(__file__).resolve().parents[1] / "app" / "Home.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port), "--server.address", where]
    for k, v in (SAFE_SERVER | FAST_SERVER).items():
        cmd += [f"--{k}", v]
    return cmd, env


def cmd_app(args):
    cmd, env = app_command(args.port, args.address, args.classroom, name=args.name)
    if args.classroom:
        print(f"Class mode (class {env['BINLAB_CLASS_NAME']!r}): the lab listens on {cmd[cmd.index('--server.address') + 1]}:{args.port}. "
              f"Learners open http://<this machine's address>:{args.port} and pick a nickname; the Class page shows their pinned "
              f"runs and lesson answers. The teacher enters this token in the sidebar to reveal answers, retrain "
              f"baselines, change the training rows and delete runs:\n\n    {env['BINLAB_TEACHER_TOKEN']}\n", flush=True)
    return subprocess.call(cmd, env=SERVER_ENV | os.environ | env, cwd=Path(__file__).resolve().parents[1])


def finite_float(text: str) -> float:
    """A finite number (argparse type): ``nan``, ``inf`` and words are refused with a plain message."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def positive_float(text: str) -> float:
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {v}")
    return v


def runner_args(p, default: str = "local") -> None:
    p.add_argument("--runner", choices=["local", "ray"] + (["auto"] if default == "auto" else []), default=default,
                   help="local: in this process; ray: Ray tasks (pip install -e '.[cluster]')"
                        + ("; auto: Ray when installed, else local" if default == "auto" else ""))
    p.add_argument("--address", help="join this Ray cluster (host:6379 or ray://host:10001) instead of starting one here")
    p.add_argument("--threads", type=positive_int, help="torch threads per task (default: torch's; Ray: 1 per task)")
    p.add_argument("--gpus-per-task", type=float, help="Ray: the GPU share each task asks for (default: 1 on a cluster with GPUs, "
                                                      "else 0; 0.25 puts four tasks on one GPU)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="binlab", description="Binarize a small transformer text classifier on AG_NEWS.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, model=True):
        p.add_argument("--data", default=None, help="AG_NEWS folder in HF layout or hub id (default: $BINLAB_DATA, else the hub)")
        if model:
            p.add_argument("--preset", default="scratch", help="tiny | scratch | minilm-l2 | lm | tiny-lm (default: scratch)")
            p.add_argument("--train-rows", type=int, default=None,
                           help="use the first N training rows (default: all; the hub's full split has 120k). A baseline is cached per row count")

    p = sub.add_parser("data", help="show where AG_NEWS comes from and check that it loads")
    common(p, model=False)
    p.set_defaults(fn=cmd_data)

    p = sub.add_parser("train", help="train (or load the cached) full-precision baseline of a preset")
    common(p)
    p.add_argument("--epochs", type=positive_float, default=None, help="override the preset's epochs")
    p.add_argument("--retrain", action="store_true", help="ignore the cached checkpoint")
    p.set_defaults(fn=cmd_train)

    for name, fn, hlp in (("eval", cmd_eval, "evaluate the baseline, optionally binarized (PTQ)"),
                          ("size", cmd_size, "exact storage per component"),
                          ("generate", cmd_generate, "a language model's greedy continuation of --prompt, fp32 and binarized (PTQ)"),
                          ("export", cmd_export, "binarize (PTQ) and write the packed model file (binlab.runtime.export)")):
        p = sub.add_parser(name, help=hlp)
        common(p)
        p.add_argument("--spec", help="QuantSpec as JSON text or a JSON file")
        p.add_argument("--target", help="group or pattern to quantize, e.g. QK, all-except-head, 'layers.*.attn.q'")
        p.add_argument("--method", default="xnor", help="binarizer name (see binlab.methods.BINARIZERS)")
        p.add_argument("--options", help='method options as JSON, e.g. \'{"tau": 0.5}\'')
        p.add_argument("--ste", default=None)
        p.add_argument("--act", default=None, help="binarize the inputs too (W1A1), e.g. sign")
        if name == "eval":
            p.add_argument("--split", default="test", choices=["val", "test"])
        elif name == "generate":
            p.add_argument("--prompt", required=True)
            p.add_argument("--model", default=None, help="a packed language model file (binlab export): run it without torch")
            p.add_argument("--tokens", type=int, default=20, help="at most this many new tokens")
            p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
        elif name == "export":
            p.add_argument("--out", required=True, help="the .safetensors file to write")
            p.add_argument("--verify", action="store_true", help="load the file back and compare its predictions on the test split")
        else:
            p.add_argument("--json", action="store_true", help="print the size report as JSON (summary with total_bytes, and components)")
        p.set_defaults(fn=fn)

    p = sub.add_parser("classify", help="classify texts with a packed model file (binlab export), without torch")
    p.add_argument("model", help="the packed .safetensors file")
    p.add_argument("texts", nargs="*", help="texts to classify (one argument each)")
    p.add_argument("--file", default=None, help="a text file: one text per line")
    p.add_argument("--json", action="store_true", help="one JSON object per text (label and class probabilities)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    p.set_defaults(fn=cmd_classify)

    p = sub.add_parser("runtime", help="compile the torch-free runtime's kernels ahead of time for this machine (binlab.runtime.aot)")
    p.add_argument("action", choices=["build", "status"], help="build: compile them (needs a C compiler); status: are they built here")
    p.add_argument("--dir", default=None, help="where the compiled module goes (default: the cache folder's aot/)")
    p.set_defaults(fn=cmd_runtime)

    p = sub.add_parser("experiments", help="run the tables and write them to docs/results/")
    p.add_argument("action", choices=["list", "run", "render", "datasize"],
                   help="render: rewrite the markdown of every committed table from its JSON; "
                        "datasize: fp32 vs the best 1-bit recipe by training rows (docs/results/data-size-<preset>)")
    p.add_argument("name", nargs="?", default="all", help="T1..T10 or all")
    common(p)
    p.add_argument("--fast", action="store_true", help="tiny budget (for smoke tests)")
    p.add_argument("--only", help="comma-separated indices of the configurations to run (e.g. 0,1,2)")
    p.add_argument("--sizes", help="datasize: training row counts, comma-separated ('all': every row), default 2000,4000,8000,all")
    runner_args(p)
    p.add_argument("--seeds", type=positive_int, default=1, help="random seeds per trained row (the headline T7 also reseeds the baseline)")
    p.add_argument("--epochs", type=positive_float, help="QAT epochs (default: the preset's budget)")
    p.add_argument("--lr", type=positive_float, help="QAT learning rate (default: the preset's budget; with --only, must match the committed table's)")
    p.add_argument("--distill", type=finite_float, help="QAT distillation weight in [0, 1] (default: the preset's budget)")
    p.set_defaults(fn=cmd_experiments)

    p = sub.add_parser("sweep", help="run a grid file (presets x specs x budgets x seeds) into the results store, locally or on Ray")
    p.add_argument("grid", help="a YAML grid file (see binlab/experiments/grids.py)")
    p.add_argument("--data", help="AG_NEWS directory (else BINLAB_DATA, else the hub)")
    p.add_argument("--store", help="results store file (default: <cache>/results.sqlite)")
    p.add_argument("--out", help="write the sweep's rows and the budget chosen on validation to OUT.json and OUT.md")
    runner_args(p, default="auto")
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("landscape", help="loss-landscape probes: interpolate | slice | curvature (JSON out)")
    p.add_argument("probe", choices=["interpolate", "slice", "curvature"])
    common(p)
    p.add_argument("--spec", help="QuantSpec JSON (default: fp32 for slice/curvature, encoder xnor for interpolate)")
    p.add_argument("--target")
    p.add_argument("--method", default="xnor")
    p.add_argument("--options")
    p.add_argument("--ste", default=None)
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--steps", type=int, default=21)
    p.add_argument("--span", type=float, default=1.0)
    p.add_argument("--one-d", action="store_true")
    p.add_argument("--k", type=int, default=1, help="number of top eigenvalues")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write JSON here instead of stdout")
    p.set_defaults(fn=cmd_landscape)

    p = sub.add_parser("bench", help="benchmarks: kernels | live | landscape (write docs/results/)")
    p.add_argument("what", choices=["kernels", "live", "landscape"])
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("methods", help="method cards: list, one method's card, or --write docs/methods.md")
    p.add_argument("name", nargs="?", help="one method's card")
    p.add_argument("--write", action="store_true", help="regenerate docs/methods.md from the registry")
    p.set_defaults(fn=cmd_methods)

    p = sub.add_parser("app", help="start the Streamlit lab (on this machine only, unless --class)")
    p.add_argument("--port", type=int, default=8501, help="1-65535 (default 8501)")
    p.add_argument("--class", dest="classroom", action="store_true",
                   help="serve a classroom: listen on every address (or --address) and print a teacher token that shared changes need "
                        "(BINLAB_TEACHER_TOKEN sets your own)")
    p.add_argument("--address", help="the address to listen on (default: localhost; with --class: every address)")
    p.add_argument("--name", default="class", help="with --class: the class's name (letters, digits, '_', '-', '.'; default 'class')")
    p.set_defaults(fn=cmd_app)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except (ValueError, RuntimeError, ArithmeticError, OSError) as err:  # bad input, missing data, a diverged run, a full disk
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
