"""The quantizer contract and the registry every UI lists.

A quantizer maps a weight matrix ``W`` (out, in) -- or an embedding table (vocab, d), whose rows
play the role of channels -- to its fake-quantized value ``Q(W)`` of the same shape.

- :meth:`Quantizer.quantize` is the deployed value (no gradient): PTQ, evaluation, size, export.
- :meth:`Quantizer.train_forward` is the value used in QAT, with the method's own backward rule
  (by default the chosen straight-through estimator; methods whose paper specifies more -- XNOR's
  and Bi-Real's scale gradient, ReCU's clamp, FDA's noise adaptation -- override it).
- :meth:`Quantizer.make_aux` returns a training-only module (FDA's noise adaptation) or None;
  it is never stored in a deployed model and never counted in its size.
- :meth:`Quantizer.make_params` returns learned values the method stores (OneBit's value
  vectors) or None; they are trained in QAT and counted by :meth:`Quantizer.storage`.
- :meth:`Quantizer.set_progress` receives the fraction of QAT done, for schedules (ReCU's tau,
  FDA's noise weight). Outside QAT the quantizer is at progress 1 (its final state).
- :meth:`Quantizer.storage` gives the exact bits a packed deployment stores.
- Methods that use calibration data (``needs_calibration = True``: GPTQ, PB-LLM, BiLLM ...) get
  the layer's Hessian ``H = 2 X X^T / N`` through :meth:`Quantizer.calibrate` before they can
  quantize (:func:`binlab.training.calibration.calibrate_` does this for a whole model).

Convention everywhere: ``sign(0) = +1``; every stored real number is fp32 (32 bits).

Estimator inputs: trained transformer weights are about 100x smaller than 1, while the papers'
estimators are defined for weights of order 1 (BNN clips latent weights to [-1, 1]). binlab
therefore evaluates every weight estimator on ``x = w / (3 std_row(w))`` (the ``scale`` passed to
:meth:`train_forward`), so ``|x| <= 1`` is the bulk of each row; this is the one reading we add
to every paper, and the docstrings say so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from binlab.bits import FP_BITS  # noqa: F401 - every stored real number (scale, mean, threshold) is fp32


def sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with sign(0) = +1, in x's dtype."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def reduce_dims(w: torch.Tensor, per_channel: bool) -> dict:
    return dict(dim=tuple(range(1, w.ndim)), keepdim=True) if per_channel else dict(dim=tuple(range(w.ndim)), keepdim=True)


def n_groups(shape, per_channel: bool) -> int:
    return shape[0] if per_channel else 1


def numel(shape) -> int:
    return int(math.prod(shape))


def rows(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``w`` as (groups, n): one row per output channel, or a single row."""
    return w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)


@dataclass
class Quantizer:
    """Base class. Subclasses set the class variables, declare their options as dataclass fields
    (and only options that change what they compute), and implement ``quantize`` and ``storage``."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""  # authors, year, title
    arxiv: ClassVar[str] = ""
    mode: ClassVar[str] = "PTQ or QAT"  # how the paper uses it
    stores: ClassVar[str] = ""  # what a packed deployment keeps, in words
    default_ste: ClassVar[str] = "clipped"
    act_ste: ClassVar[str] = "clipped"  # estimator for input activations binarized alongside (W1A1)
    nominal_bits: ClassVar[float] = 1.0
    #: option name -> widget description for UIs: {"kind": "bool"|"float"|"int"|"choice", "label", "min", "max", "step", "choices", "none",
    #: "lab_default" (the widget's starting value when it differs from the option's default), "at_most" (another option,
    #: declared before this one, that bounds this one's value: STBLLM's N <= M)}
    ui: ClassVar[dict[str, dict]] = {}
    #: option name -> type and range of an option that has no widget (same keys as ``ui``: "kind", "min", "max",
    #: "choices", "none"). Every option has one or the other (:meth:`schema`), checked whenever a spec is parsed
    #: (:meth:`check_options`: from a URL, a file, the CLI or the API), so no input can ask for unbounded work.
    bounds: ClassVar[dict[str, dict]] = {}
    needs_calibration: ClassVar[bool] = False  # quantize() needs the layer's input Hessian

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def storage(self, shape) -> dict[str, int]:
        """Bits stored, by kind: ``{"codes": ..., "scales": ..., ...}``."""
        raise NotImplementedError

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.quantize(w)

    def train_forward(self, w: torch.Tensor, ste, scale: torch.Tensor, aux: torch.nn.Module | None = None) -> torch.Tensor:
        """QAT value of ``w`` with gradient; default: ``Q(w)`` forward, ``dL/dQ * g(w / scale)`` backward."""
        from .ste import apply_ste

        return apply_ste(w, self.quantize(w.detach()), ste, scale)

    def make_aux(self, shape) -> torch.nn.Module | None:
        return None

    #: True: the estimator acts on the latent weight itself (OneBit), not on ``w / (3 std_row)``
    raw_ste: ClassVar[bool] = False

    def init_latent(self, w: torch.Tensor) -> torch.Tensor | None:
        """The latent weight QAT starts from, given the trained one (None: the trained one; OneBit:
        ``0.01 sign(W)``). Called once when QAT quantizes a full-precision model, after the method's
        learned values were initialised from ``w``."""
        return None

    params = None  # the module make_params built (attached by the quantized component); not an option

    def init_values(self, w: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Learned values the method stores with a 2-D component (OneBit's value vectors, DB-LLM's
        scales, FBI-LLM's column scale and shift), initialised from the weight ``w``; None: none."""
        return None

    def make_params(self, w: torch.Tensor) -> torch.nn.Module | None:
        """The module of :meth:`init_values` (trained in QAT, saved with the model, counted by :meth:`storage`)."""
        v = self.init_values(w) if w.ndim == 2 else None
        return LearnedValues(**v) if v else None

    def attach(self, params: torch.nn.Module) -> None:
        """Receive the module :meth:`make_params` made (after it is moved to the weight's device)."""
        self.params = params

    def values(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """The learned values as they are now, or their initial values for ``w`` outside a model."""
        return dict(self.params.named_parameters()) if self.params is not None else self.init_values(w)

    def set_progress(self, frac: float) -> None:  # noqa: B027 - optional hook
        pass

    def bind(self, component: str) -> None:  # noqa: B027 - optional hook
        """Told the component's name when it is quantized (BinaryConnect: one noise stream per component)."""

    def act_estimator(self):
        """The estimator for inputs binarized alongside (W1A1): ``act_ste`` by name, or an STE object."""
        return self.act_ste

    def state(self) -> tuple:
        """What, besides the weight, ``quantize`` depends on (keys the evaluation cache): the calibrated
        Hessian and the current values of learned parameters."""
        params = getattr(self, "params", None)
        learned = tuple((p.data_ptr(), p._version) for p in params.parameters()) if params is not None else ()
        return (id(getattr(self, "_hessian", None)),) + learned

    def calibrate(self, hessian: torch.Tensor) -> None:
        """Receive the layer-wise Hessian ``H = 2 X X^T / N`` (in x in) of this component's inputs."""
        if hessian.ndim != 2 or hessian.shape[0] != hessian.shape[1]:
            raise ValueError(f"a Hessian must be square, got shape {tuple(hessian.shape)}")
        self._hessian = hessian

    def hessian_for(self, w: torch.Tensor) -> torch.Tensor:
        """The calibrated Hessian, checked against ``w`` (out, in); a clear error when missing."""
        h = getattr(self, "_hessian", None)
        if h is None:
            raise ValueError(f"method {self.name!r} needs calibration data: quantize the model, then call "
                             "binlab.training.calibration.calibrate_(model, binlab.training.calibration.calibration_set(splits)) "
                             "(the CLI and the lab do this for you)")
        if h.shape[0] != w.shape[1]:
            raise ValueError(f"Hessian is {tuple(h.shape)} but the weight has {w.shape[1]} input columns")
        return h

    @classmethod
    def options(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default for f in fields(cls)}

    @classmethod
    def schema(cls) -> dict[str, dict]:
        """Every option's type and range: its widget's (``ui``) or, without a widget, its ``bounds``."""
        return {n: cls.ui.get(n) or cls.bounds.get(n) for n in cls.options()}

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Raise ValueError naming the option, its value and its range when a value is of the wrong type or out of range."""
        schema, defaults = cls.schema(), cls.defaults()
        for name, v in options.items():
            s = schema.get(name)
            if s is None:
                raise ValueError(f"method {cls.name!r} has no option {name!r}; valid options: {cls.options()}")
            check_value(f"{cls.name} option {name}", v, s, none_ok=defaults.get(name) is None or "none" in s)

    @classmethod
    def summary(cls) -> str:
        """The first paragraph of the docstring (one line for pickers)."""
        return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


def check_value(what: str, v, s: dict, none_ok: bool = False) -> None:
    """Check one value against a schema entry (``kind`` bool/int/float/choice, ``min``/``max``, ``choices``)."""
    import math

    if v is None:
        if none_ok:
            return
        raise ValueError(f"{what} cannot be empty (null)")
    kind = s.get("kind")
    if kind == "bool":
        if not isinstance(v, bool):
            raise ValueError(f"{what} must be true or false, got {v!r}")
        return
    if kind == "choice":
        if v not in s["choices"] or isinstance(v, bool) != any(isinstance(c, bool) for c in s["choices"]):
            raise ValueError(f"{what} must be one of {s['choices']}, got {v!r}")
        return
    if kind == "int" and (isinstance(v, bool) or not isinstance(v, int)):
        raise ValueError(f"{what} must be a whole number, got {v!r}")
    if kind == "float" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    if kind not in ("int", "float"):
        raise ValueError(f"{what}: unknown schema kind {kind!r}")
    if not s["min"] <= v <= s["max"]:
        raise ValueError(f"{what} must be in [{s['min']}, {s['max']}], got {v!r}")


class LearnedValues(torch.nn.Module):
    """A method's learned values as named parameters (OneBit's value vectors, DB-LLM's scales ...)."""

    def __init__(self, **values: torch.Tensor):
        super().__init__()
        for k, v in values.items():
            setattr(self, k, torch.nn.Parameter(v.detach().clone()))


BINARIZERS: dict[str, type[Quantizer]] = {}


def register(cls):
    if cls.name in BINARIZERS:
        raise ValueError(f"method {cls.name!r} registered twice")
    BINARIZERS[cls.name] = cls
    return cls
