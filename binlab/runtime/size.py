"""Exact model-size accounting: the one source of truth for every size binlab shows.

Every parameter of the model is counted once. A quantized component stores what its method
says (:meth:`binlab.methods.Quantizer.storage`: weight codes plus every scale, mean, mask
and index); every other parameter -- biases, layer norms, unquantized weights -- is fp32.
Reduction ratio as in the seed: ``(original - compressed) / original * 100 %``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from binlab.bits import FP_BITS
from binlab.nn.quantize import is_method_state, is_training_aux


@dataclass
class ComponentSize:
    name: str
    method: str  # "fp32" or the quantization method
    n_weights: int  # elements of the component's main weight (0 for bias/norm-only entries)
    n_params: int  # all parameters owned by the component (weight + bias, or norm scale + shift)
    bits: dict[str, int] = field(default_factory=dict)  # codes / scales / means / index / fp32

    @property
    def total_bits(self) -> int:
        return int(sum(self.bits.values()))


@dataclass
class SizeReport:
    components: list[ComponentSize]

    @property
    def total_bits(self) -> int:
        return sum(c.total_bits for c in self.components)

    @property
    def fp32_bits(self) -> int:
        return FP_BITS * sum(c.n_params for c in self.components)

    @property
    def total_bytes(self) -> float:
        return self.total_bits / 8

    @property
    def megabytes(self) -> float:
        return self.total_bytes / 1e6

    @property
    def reduction(self) -> float:
        """(original - compressed) / original, in percent."""
        return 100.0 * (self.fp32_bits - self.total_bits) / self.fp32_bits

    @property
    def n_params(self) -> int:
        return sum(c.n_params for c in self.components)

    @property
    def bits_per_param(self) -> float:
        return self.total_bits / self.n_params

    def bits_per_weight(self, quantized_only: bool = True) -> float:
        """Average stored bits per weight of the quantized components (everything they store, biases excluded)."""
        cs = [c for c in self.components if c.method != "fp32" or not quantized_only]
        n = sum(c.n_weights for c in cs)
        b = sum(c.total_bits - c.bits.get("bias", 0) for c in cs)
        return b / n if n else float(FP_BITS)

    def summary(self) -> dict:
        return {
            "total_bits": self.total_bits,
            "total_bytes": self.total_bytes,
            "megabytes": self.megabytes,
            "fp32_megabytes": self.fp32_bits / 8 / 1e6,
            "reduction_percent": self.reduction,
            "bits_per_param": self.bits_per_param,
            "bits_per_quantized_weight": self.bits_per_weight(),
            "n_params": self.n_params,
        }

    def rows(self) -> list[dict]:
        return [{"component": c.name, "method": c.method, "params": c.n_params, **{f"{k}_bits": v for k, v in c.bits.items()},
                 "total_bits": c.total_bits, "bits_per_param": c.total_bits / max(c.n_params, 1)} for c in self.components]

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "components": [asdict(c) | {"total_bits": c.total_bits} for c in self.components]}


def model_size(model: nn.Module) -> SizeReport:
    """Per-component storage of ``model`` in bits (see the module docstring for the rules)."""
    comps: list[ComponentSize] = []
    seen: set[int] = set()
    for name, mod in model.named_modules():
        if is_training_aux(name):
            continue  # QAT-only machinery (FDA's noise module): not part of the deployed model
        if is_method_state(name):
            continue  # a method's learned values (OneBit's vectors): in the parent's storage()
        own = [(pn, p) for pn, p in mod.named_parameters(recurse=False) if id(p) not in seen]
        if not own and not callable(getattr(mod, "storage", None)):
            continue
        seen.update(id(p) for _, p in own)
        n_params = sum(p.numel() for _, p in own)
        if callable(getattr(mod, "storage", None)):  # QuantLinear, QuantEmbedding, packed.PackedLinear/PackedEmbedding
            bits = dict(mod.storage())
            bias = getattr(mod, "bias", None)
            if bias is not None:
                bits["bias"] = FP_BITS * bias.numel()
            w = getattr(mod, "weight", None)
            if isinstance(w, torch.Tensor):
                n_w = w.numel()
            elif hasattr(mod, "codec"):  # binlab.runtime.packed: a packed model loaded from a file
                n_w = mod.codec.shape[0] * mod.codec.shape[1]
            else:
                n_w = mod.out_features * mod.in_features
            n_params = n_w + (bias.numel() if bias is not None else 0)
            method = mod.method.method if hasattr(mod, "method") else mod.method_name or "packed"  # binlab.runtime.packed modules
            comps.append(ComponentSize(name, method, n_w, n_params, bits))
        else:
            w = getattr(mod, "weight", None)
            nw = w.numel() if isinstance(mod, (nn.Linear, nn.Embedding)) and w is not None else 0
            comps.append(ComponentSize(name, "fp32", nw, n_params, {"fp32": FP_BITS * n_params}))
    return SizeReport(comps)


def reduction_against(model: nn.Module, reference: nn.Module) -> float:
    """Size reduction of ``model`` in percent against the fp32 size of ``reference`` (the one fp32
    model): the same as ``model_size(model).reduction`` unless ``model`` holds several copies of it
    (BEBERT's ensemble, whose members all count)."""
    fp = model_size(reference).fp32_bits
    return 100.0 * (fp - model_size(model).total_bits) / fp
