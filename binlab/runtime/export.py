"""Write a quantized model as a packed safetensors file, and load it back as a runnable packed model.

    binlab export --preset scratch --target encoder --method xnor --act sign --out model.safetensors

File layout (``format = binlab-packed/1``): one safetensors file whose tensors are

- for every quantized component ``c``, its codec's arrays (:mod:`binlab.runtime.packed`) under
  ``c.__<field>`` (``layers.0.ffn.up.__words``, ``embed.token.__scale`` ...): the bits, scales,
  zero points, factors and salient indices the method stores, and nothing else;
- every other parameter and buffer of the model as in ``state_dict()`` (biases, layer norms,
  unquantized weights, learned activation scales), in float32.

The header's metadata holds the model config, the spec (one rule per quantized component, plus
the attention quantizers), each component's codec and shape, and a SHA-256 of all tensor bytes.
So the file's size is :func:`binlab.runtime.size.model_size`'s total plus the header (and the padding of
rows to 64-bit words), and :func:`load_packed` rebuilds the model on the ``meta`` device, puts
packed modules where the quantized components were and loads the rest: no latent float32
weight is ever materialised. A truncated or altered file raises ``ValueError`` saying so.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from binlab.nn.quantize import MethodConfig, QuantSpec, Rule

from .codecs import NotPackable
from .encoders import encode
from .fileformat import FORMAT, SEP, digest, read_packed  # noqa: F401 - read_packed: part of this module's API
from .layouts import CODECS
from .packed import PackedEmbedding, PackedLinear


def spec_of(model: nn.Module):
    """The :class:`~binlab.nn.quantize.QuantSpec` a model follows now: one rule per quantized component
    (its exact name) and the attention quantizers it carries."""
    from binlab.nn.quantize import QuantEmbedding, QuantLinear, QuantSpec, Rule

    rules = tuple(Rule(n, m.method) for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding)))
    probs = qkv = None
    rank = 0
    for mod in model.modules():
        if hasattr(mod, "prob_quantizer"):
            probs = getattr(mod.prob_quantizer, "name", None)
            qkv = mod.qkv_quantizer["q"].name if mod.qkv_quantizer is not None else None
            rank = mod.residual.rank if mod.residual is not None else 0
            break
    return QuantSpec(rules, attn_probs=probs, attn_qkv=qkv, attn_residual=rank)


def ready_specs() -> dict[str, QuantSpec]:
    """Ready-made configurations to export before a learner has made one (the Deploy page trains each
    once with the preset's QAT budget: :func:`binlab.lab.deploy.ready_packed`): W1A1 through the XNOR
    kernel (the linears only: unlike the tables' W1A1, attention stays fp32), W1A32 through lookup
    tables, and the student project's thresholding."""
    return {
        "W1A1 linears (attention itself in fp32): XNOR weights and sign inputs in every encoder linear, binary embeddings (QAT)":
            QuantSpec((Rule("embeddings", MethodConfig("xnor")), Rule("encoder", MethodConfig("xnor", act="sign")))),
        "W1A32: XNOR weights everywhere but the head (QAT)": QuantSpec.simple("all-except-head", "xnor"),
        "The student project's thresholding: bucket means everywhere but the head (QAT)": QuantSpec.simple("all-except-head", "bucket"),
    }


def act_form(act) -> dict | None:
    """What an input quantizer computes, for a runtime that has no torch modules: ``{"kind": name}`` for
    the stateless ones (:data:`binlab.methods.activations.ACTIVATIONS`), ``{"kind": "elastic", "signed",
    "bits"}`` for BiT's elastic and LSQ kinds (their scale and shift are tensors of the file)."""
    if act is None:
        return None
    if hasattr(act, "signed") and hasattr(act, "bits"):
        return {"kind": "elastic", "signed": bool(act.signed), "bits": int(act.bits)}
    return {"kind": act.name}


def attention_form(model: nn.Module) -> dict:
    """The attention quantizers of a model (the same in every layer), as :func:`act_form` describes them:
    ``{"probs": None | {"kind": "binary01" | "bibert"} | elastic form, "qkv": act form, "residual_rank": r}``."""
    for mod in model.modules():
        if hasattr(mod, "prob_quantizer"):
            pq = mod.prob_quantizer
            probs = None if pq is None else act_form(pq.act) if hasattr(pq, "act") else {"kind": pq.name}
            qkv = act_form(mod.qkv_quantizer["q"]) if mod.qkv_quantizer is not None else None
            return {"probs": probs, "qkv": qkv, "residual_rank": mod.residual.rank if mod.residual is not None else 0}
    return {"probs": None, "qkv": None, "residual_rank": 0}


def packed_tensors(model: nn.Module) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """(tensors, components): what :func:`save_packed` writes, without writing it."""
    from binlab.nn.quantize import QuantEmbedding, QuantLinear, is_training_aux

    tensors: dict[str, np.ndarray] = {}
    comps: dict[str, dict] = {}
    drop: list[str] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (QuantLinear, QuantEmbedding)) or is_training_aux(name):
            continue
        try:
            codec = encode(mod)
        except NotPackable as err:
            raise NotPackable(f"component {name!r}: {err}") from None
        for field, arr in codec.t.items():
            tensors[f"{name}{SEP}{field}"] = np.ascontiguousarray(arr)
        comps[name] = {"codec": codec.kind, "shape": list(codec.shape), "meta": codec.meta, "method": mod.method.method,
                       "kind": "linear" if isinstance(mod, QuantLinear) else "embedding", "act": mod.method.act,
                       "act_form": act_form(getattr(mod, "act", None)),
                       "shortcut": bool(getattr(mod, "shortcut", False)), "post_norm": bool(getattr(mod.quantizer, "post_norm", False)), "padding_idx": getattr(mod, "padding_idx", None),
                       "weight_shape": list(mod.weight.shape)}
        drop += [f"{name}.weight", f"{name}.qparams."]
    for key, t in model.state_dict().items():
        if any(key == d or (d.endswith(".") and key.startswith(d)) for d in drop) or ".train_aux." in f".{key}":
            continue
        tensors[key] = np.ascontiguousarray(t.detach().cpu().numpy())
    return tensors, comps


def save_packed(model: nn.Module, path: str | Path, tokenizer=None, **extra_meta: str) -> dict:
    """Write ``model`` (a :class:`~binlab.nn.model.Classifier` or :class:`~binlab.nn.model.CausalLM`, fake-quantized
    by :func:`~binlab.nn.quantize.quantize_`) packed to ``path`` (atomically). ``tokenizer`` (a
    ``tokenizers.Tokenizer``): the file carries it (``tokenizer_json``, signed, and its fingerprint), so
    :mod:`binlab.runtime.standalone` needs nothing else. Returns ``{"path", "file_bytes",
    "predicted_bytes", "tokenizer_bytes", "components"}``; :class:`~binlab.runtime.codecs.NotPackable`
    names the component and why when a method has no packed layout."""
    from safetensors.numpy import save_file

    from .size import model_size

    if not hasattr(model, "config"):
        raise ValueError("save_packed needs a binlab model (Classifier or CausalLM with .config); ensembles are not supported")
    tensors, comps = packed_tensors(model)
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict()), "spec": spec_of(model).to_json(),
            "components": json.dumps(comps, sort_keys=True), "attention": json.dumps(attention_form(model), sort_keys=True)}
    if tokenizer is not None:
        from binlab.data import fingerprint

        if not hasattr(tokenizer, "to_str"):
            raise ValueError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        meta["tokenizer_json"] = tokenizer.to_str()
        meta["tokenizer"] = fingerprint(meta["tokenizer_json"])
    meta["sha256"] = digest(tensors, meta)
    meta |= {k: str(v) for k, v in extra_meta.items()}
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give the packed file's path, e.g. {path / 'model.safetensors'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except Exception as err:  # a full disk, a folder that cannot be written: nothing half-written is left
        tmp.unlink(missing_ok=True)
        raise OSError(f"could not write {path} ({err}); free some disk space or pick another path") from None
    return {"path": str(path), "file_bytes": path.stat().st_size, "predicted_bytes": model_size(model).total_bytes,
            # the header holds the tokenizer as a JSON string (quotes escaped)
            "tokenizer_bytes": len(json.dumps(meta["tokenizer_json"], ensure_ascii=False).encode()) if tokenizer is not None else 0,
            "components": len(comps)}


def load_packed(path: str | Path, tokenizer=None, inputs: str = "exact") -> nn.Module:
    """The runnable packed model in ``path`` (eval mode, CPU): quantized components are
    :class:`~binlab.runtime.packed.PackedLinear`/:class:`~binlab.runtime.packed.PackedEmbedding`; no latent weights.
    ``inputs``: how W1A32 linears take a batch's inputs (:data:`binlab.runtime.packed.INPUTS`): ``exact``
    (float32, equal to fake quantization), ``int8`` (rounded to 8 bits per token, an int8 GEMM) or ``bf16``
    (rounded to bfloat16, a bfloat16 GEMM); the rounded ones can be faster and differ from fake
    quantization by that rounding, which the deploy bench measures.
    ``model.packed_meta`` keeps the file's metadata. A damaged file raises ``ValueError``, and so does a
    ``tokenizer`` other than the one the file was written with (its fingerprint is in the header): the
    model would read other token ids and answer wrongly without a word."""
    from binlab.methods.activations import make_act
    from binlab.nn.model import ModelConfig, build
    from binlab.nn.quantize import MethodConfig, QuantSpec, install_attention_, set_submodule

    meta, tensors = read_packed(path)
    if tokenizer is not None and meta.get("tokenizer"):
        from binlab.data import fingerprint

        if fingerprint(tokenizer.to_str()) != meta["tokenizer"]:
            raise ValueError(f"{path} was written with another tokenizer (fingerprint {meta['tokenizer']}, this one "
                             f"{fingerprint(tokenizer.to_str())}): load it with the tokenizer of the preset and data it was exported from")
    try:
        cfg = ModelConfig(**json.loads(meta["config"]))
        spec = QuantSpec.from_json(meta["spec"])
        comps = json.loads(meta["components"])
        if not isinstance(comps, dict) or not all(isinstance(v, dict) for v in comps.values()):
            raise ValueError("'components' must map names to objects")
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: its header is not a valid binlab packed model header ({err})") from None
    with torch.device("meta"):
        model = build(cfg)
        install_attention_(model, spec)
        for name, info in comps.items():
            fields = {k[len(name) + len(SEP):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(name + SEP)]}
            try:
                codec = CODECS[info["codec"]](tuple(info["shape"]), info["meta"], fields)
                base = model.get_submodule(name)
                kind = "linear" if isinstance(base, nn.Linear) else "embedding" if isinstance(base, nn.Embedding) else None
                if kind is None or info.get("kind") != kind:
                    raise ValueError(f"the header says {info.get('kind')!r} but the model has a {type(base).__name__} there")
                if tuple(codec.shape) != tuple(base.weight.shape):
                    raise ValueError(f"codec shape {tuple(codec.shape)} does not match the model's {tuple(base.weight.shape)}")
                if not isinstance(info.get("method"), str):
                    raise ValueError("no method name")
            except (KeyError, AttributeError, ValueError, TypeError, IndexError) as err:
                raise ValueError(f"{path}: component {name!r} cannot be read ({err})") from None
            if info["kind"] == "linear":
                act = None
                if info.get("act"):
                    mc = MethodConfig(info["method"], act=info["act"])
                    act = make_act(info["act"], ste=mc.make().act_estimator(), features=codec.shape[1])
                mod = PackedLinear(codec, base.bias, act, info.get("shortcut", False), info["method"], info.get("post_norm", False),
                                   inputs=inputs)
            else:
                mod = PackedEmbedding(codec, info.get("padding_idx"), info["method"])
            set_submodule(model, name, mod)
    rest = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
    want = model.state_dict()
    wrong = [k for k, t in rest.items() if k in want and t.dtype != want[k].dtype]
    if wrong:
        raise ValueError(f"{path}: tensors of the wrong type, e.g. {wrong[0]} is {rest[wrong[0]].dtype}, the model needs {want[wrong[0]].dtype}")
    try:
        model.load_state_dict(rest, strict=True, assign=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: its tensors do not fit the model in its header ({str(err).splitlines()[0]})") from None
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"{path}: the file has no values for {left[:5]}")
    model.eval()
    model.packed_meta = meta
    return model


def file_info(path: str | Path) -> dict:
    """What :func:`save_packed` returns, for a packed file already on disk: its bytes, the accounting of
    the model it holds (the packed modules count their own bits), the tokenizer's share, the components."""
    model = load_packed(path)
    from .size import model_size

    meta = model.packed_meta
    tok = meta.get("tokenizer_json")
    return {"path": str(path), "file_bytes": Path(path).stat().st_size, "predicted_bytes": model_size(model).total_bytes,
            "tokenizer_bytes": len(json.dumps(tok, ensure_ascii=False).encode()) if tok else 0,
            "components": len(json.loads(meta["components"]))}


def check_size(info: dict, rel: float = 0.01, slack: int = 16 * 1024) -> bool:
    """Whether a written file's size, less the tokenizer it carries, equals the predicted size within
    ``rel`` or ``slack`` bytes (the header)."""
    weights = info["file_bytes"] - info.get("tokenizer_bytes", 0)
    return abs(weights - info["predicted_bytes"]) <= max(rel * info["predicted_bytes"], slack)


def classify_text(model: nn.Module, tokenizer, text: str, repeats: int = 5) -> dict:
    """One text through a classifier: ``{"label", "probs", "ms"}`` (class probabilities, and the
    median latency of ``repeats`` forward passes in milliseconds, batch of 1, after one warm-up)."""
    import statistics
    import time

    from binlab.data import CLASSES
    from binlab.data import encode as encode_texts

    if not isinstance(text, str) or not text.strip():
        raise ValueError("type a headline to classify")
    split = encode_texts(tokenizer, [text], [0], model.config.max_len)
    x, _ = next(split.batches(1))
    device = next(model.parameters()).device
    x = x.to(device)
    was = model.training
    model.eval()
    with torch.no_grad():
        logits = model(x)
        ts = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t0)
    model.train(was)
    probs = torch.softmax(logits.float().cpu()[0], -1).numpy()
    return {"label": CLASSES[int(probs.argmax())], "probs": dict(zip(CLASSES, probs.tolist())), "ms": 1e3 * statistics.median(ts)}
