"""Small, self-contained demonstrations used by the course notebooks (no data needed)."""
from __future__ import annotations

import numpy as np
import torch

from binlab.methods import sign
from binlab.methods.ste import apply_ste, get_ste


def ste_curves(x: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """For every STE: the smooth stand-in Approx(x) and its derivative g(x), on a grid (for plots)."""
    from binlab.methods.ste import STES

    t = torch.as_tensor(np.linspace(-2.5, 2.5, 501) if x is None else x, dtype=torch.float64)
    return {n: {"x": t.numpy(), "forward": s.forward_proxy(t).numpy(), "grad": s.grad(t).numpy()} for n, s in STES.items()}


def latent_toy(ste: str = "clipped", steps: int = 150, lr: float = 0.05, start=(-0.3, 0.4), seed: int = 0) -> dict:
    """A 2-weight regression whose ideal binary weights are (+1, -1), trained from latent weights with
    the wrong signs: ``y_hat = X sign(w)``, squared loss, SGD through the STE.

    Returns the latent trajectory (steps + 1, 2), the binary weights and the loss per step. With
    sign's true gradient (zero) nothing would move; the STE carries the gradient to the latent
    weights, which cross zero and flip the binary weights.
    """
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(256, 2, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -1.0], dtype=torch.float64)
    w = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    est = get_ste(ste)
    traj, binary, losses = [w.detach().clone().numpy()], [], []
    for _ in range(steps):
        q = apply_ste(w, sign(w.detach()), est)
        loss = ((X @ q - y) ** 2).mean()
        w.grad = None
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
        traj.append(w.detach().clone().numpy())
        binary.append(sign(w.detach()).numpy())
        losses.append(loss.item())
    return {"latent": np.array(traj), "binary": np.array(binary), "loss": np.array(losses)}


#: the parts of a model the LSTM-era lesson compares (component name prefixes; a component's norm and
#: bias count with it)
PARTS = {"embeddings": ("embed.",), "layers": ("layers.",), "head": ("head",)}


def bits_by_part(model: torch.nn.Module) -> dict[str, int]:
    """Stored bits of the embeddings, the layers (attention and FFN linears, or an LSTM's recurrent
    matrices, with their biases and norms) and the head, as :func:`binlab.runtime.size.model_size`
    counts them (fp32 where not quantized)."""
    from binlab.runtime.size import model_size

    out = dict.fromkeys(PARTS, 0)
    for c in model_size(model).components:
        part = next((p for p, prefixes in PARTS.items() if c.name.startswith(prefixes)), None)
        if part is None:
            raise ValueError(f"component {c.name!r} belongs to none of {list(PARTS)}")
        out[part] += c.total_bits
    return out
