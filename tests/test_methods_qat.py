"""A QAT smoke run per registered method on the tiny preset: training through the method's own
backward lowers the loss, and evaluation afterwards uses the method's final state."""
import copy

import pytest
import torch

from binlab.methods import BINARIZERS
from binlab.nn.quantize import MethodConfig, QuantSpec, Rule, quantized_modules
from binlab.training.qat import QATConfig, qat
from binlab.training.train import TrainConfig, evaluate

PTQ_ONLY = {n for n, c in BINARIZERS.items() if c.needs_calibration is True}  # GPTQ, BiLLM, ARB, STBLLM
QAT_OPTIONS = {"pbllm": {"gptq": False, "metric": "magnitude"}}  # PB-LLM's QAT recipe: magnitude mask, no GPTQ


@pytest.mark.parametrize("name", sorted(set(BINARIZERS) - PTQ_ONLY))
def test_qat_lowers_the_loss(name, tiny_model, tiny_splits):
    spec = QuantSpec((Rule("encoder", MethodConfig(name, options=QAT_OPTIONS.get(name, {}))),))
    train = tiny_splits.train.head(320)
    cfg = QATConfig(TrainConfig(epochs=3, lr=3e-3, warmup=0.0, batch_size=32, seed=0, device="cpu"))
    torch.manual_seed(0)
    student, hist = qat(copy.deepcopy(tiny_model), spec, train, cfg)
    first, last = sum(hist["loss"][:5]) / 5, sum(hist["loss"][-5:]) / 5
    assert last < first - 0.05, (name, first, last)
    for m in quantized_modules(student):
        if hasattr(m.quantizer, "current_tau"):
            assert m.quantizer.current_tau == pytest.approx(m.quantizer.tau)  # ReCU ends at its final tau
    assert evaluate(student, tiny_splits.val).accuracy > 0.3


def test_recu_schedule_runs_during_qat(tiny_model, tiny_splits, monkeypatch):
    """tau rises from 0.85 to 0.99 over QAT, step by step (ReCU §5.2.1)."""
    import binlab.training.qat as Q

    students, seen = [], []
    real_train = Q.train
    monkeypatch.setattr(Q, "train", lambda model, *a, **k: (students.append(model), real_train(model, *a, **k))[1])

    def cb(ev):
        if ev["kind"] == "step":
            seen.append(students[0].layers[0].attn.q.quantizer.current_tau)

    spec = QuantSpec((Rule("layers.0.attn.q", MethodConfig("recu")),))
    qat(tiny_model, spec, tiny_splits.train.head(256), QATConfig(TrainConfig(epochs=1, lr=1e-3, warmup=0.0, device="cpu")), callback=cb)
    assert seen[0] > 0.85 and seen[-1] == pytest.approx(0.99)
    assert all(a <= b + 1e-12 for a, b in zip(seen, seen[1:]))


def test_qat_applies_binaryconnect_clip(tiny_model, tiny_splits):
    """After every QAT step the latent weights of stochastic layers are clipped to [-H, H] (BinaryConnect §2.4)."""
    from binlab.methods import glorot_h

    spec = QuantSpec((Rule("encoder", MethodConfig("stochastic")),))
    student, _ = qat(tiny_model, spec, tiny_splits.train.head(128), QATConfig(TrainConfig(epochs=1, lr=1e-2, warmup=0.0, device="cpu")))
    for m in quantized_modules(student):
        H = glorot_h(tuple(m.weight.shape))
        assert float(m.weight.detach().abs().max()) <= H + 1e-7


def test_training_only_modules_stay_out_of_checkpoints_and_probes(tiny_model, tmp_path):
    from safetensors.torch import load_file

    from binlab.nn.quantize import quantize_
    from binlab.probes.landscape import ModelLoss
    from binlab.training.train import save_checkpoint

    quantize_(tiny_model, QuantSpec((Rule("encoder", MethodConfig("fda")),)))
    assert any("train_aux" in n for n, _ in tiny_model.named_parameters())  # it exists for QAT ...
    save_checkpoint(tiny_model, tmp_path / "m")
    assert not [k for k in load_file(str(tmp_path / "m.safetensors")) if "train_aux" in k]  # ... but is never saved
    probe = ModelLoss.__new__(ModelLoss)
    probe.model = tiny_model
    names = [n for n, _ in probe.params(include_1d=True)]
    assert names and not [n for n in names if "train_aux" in n]  # nor part of landscape directions / Hessians
