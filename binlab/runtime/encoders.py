"""From a quantized component to its codec (:mod:`binlab.runtime.codecs`): the methods whose packed
form comes from their own learned values or recorded layout (OneBit, FBI-LLM, BinaryBERT, DB-LLM,
PB-LLM, BiLLM, OAC), and for every other method the codec its deployed values fit (two levels per
row, or an affine grid); each checked to give the quantized weight back.
"""
from __future__ import annotations

import numpy as np
import torch

from .bitpack import pack_bits
from .codecs import (
    NOT_PACKABLE,
    BinaryCodec,
    Codec,
    GridCodec,
    NotPackable,
    PlanesCodec,
    as_numpy,
    pack_uint,
    same_rows,
    uint_bits,
)
from .layouts import ARBBlocksCodec, BlocksCodec, MoSCodec, NMBlocksCodec, PartialCodec, comb_rank, nm_layout


def _sign_with_factors(w, q, **factors) -> BinaryCodec:
    """sign(W) bits with learned per-row/per-column factors (OneBit, FBI-LLM), no level of their own."""
    s = np.where(as_numpy(w) >= 0, 1.0, -1.0)
    return BinaryCodec(q.shape, {"symmetric": True, "unit": True},
                       {"words": pack_bits(s)} | {k: as_numpy(v).astype(np.float32) for k, v in factors.items()})


def _encode_onebit(qz, w, q):
    v = qz.values(w)
    return _sign_with_factors(w, q, row_factor=v["a"], col_factor=v["b"])  # Q = a_n sign(W_nk) b_k


def _encode_fbi(qz, w, q):
    v = qz.values(w)
    return _sign_with_factors(w, q, col_factor=v["alpha"], col_shift=v["beta"])  # Q = alpha_k sign(W_nk) + beta_k


def _encode_binarybert(qz, w, q):
    v = qz.values(w)
    planes, scales = [], []
    for p in (v["w1"], v["w2"]):
        p2 = as_numpy(p).reshape(q.shape[0], -1)
        planes.append(np.where(p2 >= 0, 1.0, -1.0))
        scales.append(np.abs(p2).mean(1) if qz.per_channel else np.abs(p2).mean(keepdims=True).reshape(1))
    return PlanesCodec.build(planes, scales, signed=True, group=q.shape[1] if qz.per_channel else 0)


def _encode_dbllm(qz, w, q):
    w2 = w.reshape(w.shape[0], -1)
    a1, a2 = (t.detach() for t in qz._scales(w2))
    b1, b2 = qz._binaries(w2.detach(), a1, a2)
    v = qz.values(w2)
    group = min(qz.group, q.shape[1])
    return PlanesCodec.build([as_numpy(b1), as_numpy(b2)], [as_numpy(v["a1"]), as_numpy(v["a2"])], signed=False, group=group)


def _encode_pbllm(qz, w, q):
    from binlab.methods.gptq import minmax_params

    N, K = q.shape
    qq = torch.from_numpy(q).double()
    alpha = qq.abs().mode(1).values  # the binarized weights (the majority) sit at +-alpha_n
    binar = qq.abs() == alpha[:, None]
    s8, z8 = minmax_params(w.reshape(N, -1).double(), qz.high_bits)
    codes = torch.round(qq / s8) + z8
    sal = (~binar).numpy()
    rowptr = np.concatenate([[0], np.cumsum(sal.sum(1))]).astype(np.int32)
    rr, cc = np.nonzero(sal)
    if ((codes < 0) | (codes > 255)).numpy()[sal].any():
        raise NotPackable("pbllm: a salient weight is not on its row's 8-bit grid")
    csr = {"rowptr": rowptr, "cols": pack_uint(cc, uint_bits(K))}
    index = {"mask": pack_bits(np.where(sal, 1.0, 0.0), signed=False)} if N * K <= len(cc) * uint_bits(K) + 32 * (N + 1) else csr
    t = {"signs": np.packbits((q >= 0)[~sal]), "scale": alpha.float().numpy(), **index,
         "codes": codes.numpy()[rr, cc].astype(np.uint8),
         "step": s8.reshape(-1).float().numpy(), "zeros": z8.reshape(-1).numpy().astype(np.uint8)}
    return PartialCodec((N, K), {}, t)


def _encode_billm(qz, w, q):
    layout = getattr(qz, "layout", None)
    if not layout:
        raise NotPackable(f"{qz.name}: the quantizer keeps no packable layout (quantize the component first)")
    sal = np.concatenate([blk["salient"] for blk in layout])
    s1 = np.concatenate([blk["signs"] for blk in layout], 1)
    s2 = np.concatenate([blk["signs2"][:, blk["salient"]] for blk in layout], 1)
    conc = np.concatenate([blk["concentrated"][:, ~blk["salient"]] for blk in layout], 1)
    N = q.shape[0]
    t = {"salient": np.packbits(sal), "signs": pack_bits(s1),
         "signs2": pack_bits(s2) if s2.shape[1] else np.zeros((N, 1), np.uint64),
         "concentrated": pack_bits(np.where(conc, 1.0, 0.0), signed=False) if conc.shape[1] else np.zeros((N, 1), np.uint64),
         "scales": np.stack([blk["scales"] for blk in layout]).astype(np.float32)}
    return BlocksCodec(q.shape, {"blocks": [int(blk["salient"].size) for blk in layout]}, t)


def _encode_stbllm(qz, w, q):
    import math

    layout = getattr(qz, "layout", None)
    if not layout:
        raise NotPackable("stbllm: the quantizer keeps no packable layout (quantize the component first)")
    keep = np.concatenate([blk["keep"] for blk in layout], 1)
    sal = np.concatenate([blk["salient"] for blk in layout])
    s1 = np.concatenate([blk["signs"] for blk in layout], 1)
    s2 = np.concatenate([blk["signs2"] for blk in layout], 1)
    grp = np.concatenate([blk["group"] for blk in layout], 1)
    N, K = keep.shape
    n, m = qz.n, qz.m
    pbits = max(1, math.ceil(math.log2(math.comb(m, n)))) if math.comb(m, n) > 1 else 0
    t = {}
    if pbits:
        ranks = np.stack([comb_rank(keep[:, c0:c0 + width]) for c0, width, _ in nm_layout(K, n, m)], 1)
        if ranks.max(initial=0) >= 2**pbits:
            raise NotPackable("stbllm: a group's kept positions do not fit the N:M index")
        t["patterns"] = pack_uint(ranks.ravel(), pbits)
    salkeep = keep & sal[None, :]
    rest = keep & ~sal[None, :]
    digits = grp[rest].astype(np.int64)
    digits = np.concatenate([digits, np.zeros(-len(digits) % 5, np.int64)]).reshape(-1, 5)
    t |= {"salient": np.packbits(sal), "signs": np.packbits(s1[keep] >= 0), "signs2": np.packbits(s2[salkeep] >= 0),
          "groups": (digits * (3 ** np.arange(5))[None, :]).sum(1).astype(np.uint8),
          "scales": np.stack([blk["scales"] for blk in layout]).astype(np.float32)}
    return NMBlocksCodec(q.shape, {"n": n, "m": m, "blocks": [int(blk["salient"].size) for blk in layout]}, t)


def _encode_arb(qz, w, q):
    layout = getattr(qz, "layout", None)
    if not layout:
        raise NotPackable("arb: the quantizer keeps no packable layout (quantize the component first)")
    N = q.shape[0]

    def plane(key, cols, signed=True):
        x = np.concatenate([blk[key][:, cols(blk)] for blk in layout], 1)
        return pack_bits(np.where(x, 1.0, -1.0 if signed else 0.0), signed=signed) if x.shape[1] else np.zeros((N, 1), np.uint64)

    sal = np.concatenate([blk["salient"] for blk in layout])
    t = {"salient": np.packbits(sal), "signs": plane("signs", lambda b: slice(None)),
         "signs2": plane("signs2", lambda b: b["salient"]), "cgb": plane("cgb", lambda b: b["salient"], signed=False),
         "concentrated": plane("concentrated", lambda b: ~b["salient"], signed=False)}
    rc = qz.variant == "rc"
    if rc:
        t |= {"row": np.stack([blk["row"] for blk in layout]).astype(np.float32),
              "col": np.concatenate([blk["col"] for blk in layout], 1).astype(np.float32)}
    else:
        t["scales"] = np.stack([blk["scales"] for blk in layout]).astype(np.float32)
    return ARBBlocksCodec(q.shape, {"blocks": [int(blk["salient"].size) for blk in layout], "rc": rc}, t)


def _encode_binarymos(qz, w, q):
    v = qz.params
    if v is None:
        raise NotPackable("binarymos: the component has no experts (quantize it with quantize_ first)")
    t = {"words": pack_bits(np.where(as_numpy(w) >= 0, 1.0, -1.0)), "router": as_numpy(v.router.weight).astype(np.float32),
         "s_in": as_numpy(v.s_in).astype(np.float32), "s_out": as_numpy(v.s_out).astype(np.float32)}
    return MoSCodec(q.shape, {}, t)


#: methods whose packed form comes from their own learned values, not from the values of Q alone
ENCODERS = {"billm": _encode_billm, "oac": _encode_billm, "stbllm": _encode_stbllm, "arb": _encode_arb, "onebit": _encode_onebit, "fbi": _encode_fbi, "binarybert": _encode_binarybert, "dbllm": _encode_dbllm,
            "pbllm": _encode_pbllm, "binarymos": _encode_binarymos}


def encode(mod) -> Codec:
    """The packed form of a :class:`~binlab.nn.quantize.QuantLinear`/:class:`~binlab.nn.quantize.QuantEmbedding`,
    checked to give its deployed weight back; :class:`NotPackable` saying why when it cannot."""
    name = mod.method.method
    if name in NOT_PACKABLE:
        raise NotPackable(f"method {name!r} cannot be packed: {NOT_PACKABLE[name]}")
    with torch.no_grad():
        w = mod.weight.detach().float().cpu()
        q_t = mod.quantized_weight().detach().float().cpu()
    w2 = w.reshape(w.shape[0], -1)
    q = q_t.reshape(q_t.shape[0], -1).numpy()
    qz = mod.quantizer
    if name in ENCODERS:
        codec = ENCODERS[name](qz, w2, q)
    else:
        codec = BinaryCodec.detect(q)
        if codec is None:
            group = getattr(qz, "group", 0) or 0
            groups = [0, q.shape[1]] + ([min(group, q.shape[1])] if group else [])
            codec = GridCodec.detect(q, groups)
    if codec is None:
        raise NotPackable(f"method {name!r} on a {tuple(q.shape)} weight: its values are neither two levels per row nor "
                          "an affine grid of at most 8 bits, and the method has no packed layout of its own")
    if not same_rows(codec.dense(), q):
        raise NotPackable(f"method {name!r}: the packed form does not give the quantized weight back (max error "
                          f"{float(np.abs(codec.dense() - q).max()):.3g}); not exported")
    return codec
