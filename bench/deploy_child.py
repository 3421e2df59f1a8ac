"""One fresh process of the deploy bench (bench/deploy.py starts it): load one model, predict one text,
then the whole test set, then one text at a time; print JSON with the seconds from process start to that
first prediction, the seconds of the test set, the milliseconds per text one at a time, the resident
memory before loading and at its peak, and whether torch was imported. The torch-free runtime is timed
here only, in a process of its own, as it is deployed (beside torch its thread pools would compete).

    python bench/deploy_child.py KIND PATH IDS.npy OFFSETS.npy SPAWN_TIME [ONE_BY_ONE]

KIND: ``fp32`` (a torch checkpoint), ``packed`` (:func:`binlab.runtime.export.load_packed`, torch) or
``torchfree`` (:func:`binlab.runtime.standalone.load`: numpy and numba only, scipy kept out as
``binlab classify`` keeps it out), ``aot`` (the same kernels compiled ahead of time: :mod:`binlab.runtime.aot`, no numba)
or ``numpy`` (the numpy backend: no numba). All read the same
token ids, so the tokenizer is not part of the figures. Nothing here imports torch unless KIND needs it.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _rss_mb(field: str = "VmRSS") -> float:
    from binlab.runtime.process import status_mib

    mib = status_mib(field)
    return float("nan") if mib is None else mib


def length_sorted_batches(ids, offsets, pad: int, size: int = 64):
    """The test set as the deploy benches run it: (row indices, token ids padded with ``pad``) per batch of
    ``size`` rows, length-sorted (binlab.training.train.predict's order)."""
    import numpy as np

    lens = np.diff(offsets)
    order = np.argsort(lens, kind="stable")
    for s in range(0, len(order), size):
        rows = order[s:s + size]
        x = np.full((len(rows), max(int(lens[rows].max()), 1)), pad, dtype=np.int64)
        for j, r in enumerate(rows):
            x[j, :lens[r]] = ids[offsets[r]:offsets[r + 1]]
        yield rows, x


def main(kind: str, path: str, ids_path: str, offsets_path: str, spawned: float, one_by_one: int = 200) -> None:
    import numpy as np

    from binlab.data import PAD_ID

    ids, offsets = np.load(ids_path), np.load(offsets_path)
    lens = np.diff(offsets)
    base = _rss_mb()
    if kind in ("torchfree", "numpy", "aot"):
        from binlab.runtime.process import hold_freed_memory, keep_scipy_out
        from binlab.runtime.standalone import load

        keep_scipy_out()  # as `binlab classify` runs it: numba's start loads no scipy, and glibc keeps freed arrays
        hold_freed_memory()
        run = load(path, backend={"torchfree": "numba"}.get(kind, kind)).logits
    else:
        import torch

        if kind == "fp32":
            from safetensors.torch import load_file

            from binlab.nn.model import ModelConfig, build

            cfg = ModelConfig(**json.loads(Path(path).with_suffix(".json").read_text())["model_config"])
            with torch.device("meta"):
                model = build(cfg)
            model.load_state_dict(load_file(path), assign=True)
            model.eval()
        else:
            from binlab.runtime.export import load_packed

            model = load_packed(path)

        def run(x):
            with torch.no_grad():
                return model(torch.from_numpy(x)).numpy()
    first = run(ids[offsets[0]:offsets[1]].astype(np.int64)[None])
    first_s = time.time() - spawned
    loaded = _rss_mb()
    preds = np.empty(len(lens), np.int64)
    t0 = time.perf_counter()
    for rows, x in length_sorted_batches(ids, offsets, PAD_ID):
        lg = run(x)
        preds[rows] = (lg[:, -1] if lg.ndim == 3 else lg).argmax(-1)
    test_s = time.perf_counter() - t0
    singles = [ids[offsets[r]:offsets[r + 1]].astype(np.int64)[None] for r in np.random.default_rng(0).choice(len(lens), one_by_one, replace=False)]
    for x in singles[:5]:
        run(x)
    t0 = time.perf_counter()
    for x in singles:
        run(x)
    batch1_ms = 1e3 * (time.perf_counter() - t0) / len(singles)
    print(json.dumps({"kind": kind, "start_to_first_s": first_s, "test_s": test_s, "batch1_ms": batch1_ms, "base_mb": base,
                      "loaded_mb": loaded, "peak_mb": _rss_mb("VmHWM"), "first_class": int(np.argmax(first)),
                      "preds_sum": int(preds.sum()), "torch_imported": "torch" in sys.modules,
                      "numba_imported": "numba" in sys.modules, "scipy_imported": "scipy" in sys.modules}))


if __name__ == "__main__":
    main(*sys.argv[1:5], float(sys.argv[5]), *(int(a) for a in sys.argv[6:7]))
