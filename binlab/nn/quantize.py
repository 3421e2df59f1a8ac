"""Quantize any named component of a model: ``quantize_(model, spec)`` and ``restore_(model)``.

A :class:`QuantSpec` is an ordered list of rules ``target -> MethodConfig``; a target is a
named group (``QK``, ``attention``, ``all-except-head`` ...) or an fnmatch pattern over component
names (``layers.*.attn.q``, ``layers.1.ffn.*``, ``embed.token``, ``head``). Later rules win.
The spec is a plain dataclass that round-trips through JSON (the app keeps it in the URL).

``quantize_`` swaps ``nn.Linear``/``nn.Embedding`` for :class:`QuantLinear`/:class:`QuantEmbedding`
that *share the same Parameter objects* (latent weights), so ``restore_`` gives back bit-identical
weights after PTQ (and the trained latent weights after QAT). Re-applying a spec only touches the
components whose method changed, which keeps the app's live loop fast.
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from binlab.methods import BINARIZERS, Quantizer
from binlab.methods.activations import ACT_NAMES, carry_state, make_act
from binlab.methods.attention import ATTENTION, LowRankResidual, make_attention
from binlab.methods.ste import STES


@dataclass(frozen=True)
class MethodConfig:
    """One quantization method: a binarizer from :data:`binlab.methods.BINARIZERS`, its options
    (e.g. ``{"tau": 0.5}`` for ``bucket``, ``{"bits": 4}`` for ``uniform``), the STE used in QAT
    (``None``: the method's default) and an optional activation binarizer for the layer's input."""

    method: str = "xnor"
    options: dict = field(default_factory=dict)
    ste: str | None = None
    act: str | None = None

    def __post_init__(self):
        if self.method not in BINARIZERS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {sorted(BINARIZERS)}")
        if self.ste is not None and self.ste not in STES:
            raise ValueError(f"unknown STE {self.ste!r}; choose one of {sorted(STES)}")
        if self.act is not None and self.act not in ACT_NAMES:
            raise ValueError(f"unknown activation binarizer {self.act!r}; choose one of {list(ACT_NAMES)} or None")
        if not isinstance(self.options, dict):
            raise ValueError(f"options of {self.method!r} must be an object of option values, got {self.options!r}")
        valid = BINARIZERS[self.method].options()
        bad = set(self.options) - set(valid)
        if bad:
            raise ValueError(f"method {self.method!r} has no option(s) {sorted(bad)}; valid options: {valid}")
        BINARIZERS[self.method].check_options(self.options)  # types and ranges from the method's schema: bounded work
        self.make()  # the quantizer validates its option values (e.g. tau range)

    def make(self) -> Quantizer:
        return BINARIZERS[self.method](**self.options)

    @property
    def ste_name(self) -> str:
        return self.ste or BINARIZERS[self.method].default_ste

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


# --------------------------------------------------------------------------------------------
# quantized modules


class _Fake(nn.Module):
    """Shared logic: a latent ``weight`` and its cached fake-quantized value."""

    def _setup(self, method: MethodConfig):
        self.method = method
        self.quantizer = method.make()
        features = self.weight.shape[1] if isinstance(self, QuantLinear) else None  # BiT's learned shift: one per input channel
        self.act = make_act(method.act, ste=self.quantizer.act_estimator(), features=features) if method.act else None
        # training-only state of the method (FDA's noise adaptation): trained in QAT, never stored or counted
        aux = self.quantizer.make_aux(tuple(self.weight.shape))
        self.train_aux = aux.to(self.weight.device, self.weight.dtype) if aux is not None else None
        # stored, learned state of the method (OneBit's value vectors): trained in QAT, counted by the method's storage()
        qp = self.quantizer.make_params(self.weight.detach())
        self.qparams = qp.to(self.weight.device, self.weight.dtype) if qp is not None else None
        if qp is not None:
            self.quantizer.attach(self.qparams)
        self._cache_key = None
        self._cache = None
        self.bypass = False  # True while calibration needs this component's full-precision output

    def ste_scale(self, w: torch.Tensor) -> torch.Tensor:
        if self.quantizer.raw_ste:
            return torch.ones((), dtype=w.dtype, device=w.device)
        # the estimator acts on weights normalised by 3 std per row, so "clipped" cuts the tails
        return 3 * w.detach().reshape(w.shape[0], -1).std(1, keepdim=True).clamp_min(1e-8).reshape(-1, *([1] * (w.ndim - 1)))

    def quantized_weight(self) -> torch.Tensor:
        w = self.weight
        if self.bypass:
            return w
        if torch.is_grad_enabled() and w.requires_grad and self.training:
            return self.quantizer.train_forward(w, self.method.ste_name, self.ste_scale(w), self.train_aux)
        key = (w.data_ptr(), w._version, w.device, w.dtype, self.quantizer.state())
        if key != self._cache_key:
            self._cache = self.quantizer(w.detach())
            self._cache_key = key
        return self._cache

    def storage(self) -> dict[str, int]:
        if getattr(self.quantizer, "data_dependent_storage", False):
            with torch.no_grad():
                self.quantized_weight()  # e.g. BiLLM's salient column count is decided when it quantizes
        return self.quantizer.storage(tuple(self.weight.shape))

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, method={self.method.method}, options={self.method.options}, ste={self.method.ste_name}, act={self.method.act}"


class QuantLinear(_Fake):
    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, method: MethodConfig):
        super().__init__()
        self.weight, self.bias = weight, bias
        self._setup(method)

    @classmethod
    def from_linear(cls, lin: nn.Linear, method: MethodConfig) -> "QuantLinear":
        return cls(lin.weight, lin.bias, method)

    def to_linear(self) -> nn.Linear:
        lin = nn.Linear(self.weight.shape[1], self.weight.shape[0], bias=self.bias is not None, device="meta")
        lin.weight, lin.bias = self.weight, self.bias
        return lin.train(self.training)

    @property
    def shortcut(self) -> bool:
        """Bi-Real's real-valued shortcut ``y = W_b x + x``: only where the method asks and in == out."""
        return bool(getattr(self.quantizer, "shortcut", False)) and self.weight.shape[0] == self.weight.shape[1]

    def forward(self, x):
        xb = self.act(x) if self.act is not None else x
        custom = getattr(self.quantizer, "linear", None)
        if custom is not None and not self.bypass:  # a method whose layer is not a weight matrix (BinaryMoS's token-adaptive scales)
            w = self.weight
            train = torch.is_grad_enabled() and w.requires_grad and self.training
            y = custom(xb, w, self.bias, train, self.method.ste_name, self.ste_scale(w))
        else:
            y = F.linear(xb, self.quantized_weight(), self.bias)
        return y + x if self.shortcut else y


class QuantEmbedding(_Fake):
    def __init__(self, weight: nn.Parameter, method: MethodConfig, padding_idx=None):
        super().__init__()
        self.weight = weight
        self.padding_idx = padding_idx
        self._setup(method)

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, method: MethodConfig) -> "QuantEmbedding":
        if method.act:
            raise ValueError("embeddings have no input activations to binarize; use act=None for embedding targets")
        return cls(emb.weight, method, emb.padding_idx)

    def to_embedding(self) -> nn.Embedding:
        emb = nn.Embedding(*self.weight.shape, padding_idx=self.padding_idx, device="meta")
        emb.weight = self.weight
        return emb.train(self.training)

    def forward(self, ids):
        return F.embedding(ids, self.quantized_weight(), self.padding_idx)


# --------------------------------------------------------------------------------------------
# targets and specs

GROUPS: dict[str, list[str]] = {
    "Q": ["layers.*.attn.q"],
    "K": ["layers.*.attn.k"],
    "V": ["layers.*.attn.v"],
    "O": ["layers.*.attn.o"],
    "QK": ["layers.*.attn.q", "layers.*.attn.k"],
    "QV": ["layers.*.attn.q", "layers.*.attn.v"],
    "KV": ["layers.*.attn.k", "layers.*.attn.v"],
    "QKV": ["layers.*.attn.q", "layers.*.attn.k", "layers.*.attn.v"],
    "attention": ["layers.*.attn.*"],
    "ffn": ["layers.*.ffn.*"],
    "recurrent": ["layers.*.rnn.*"],  # an LSTM's input-to-hidden and hidden-to-hidden matrices (binlab.nn.lstm)
    "encoder": ["layers.*.attn.*", "layers.*.ffn.*", "layers.*.rnn.*"],
    "embeddings": ["embed.token", "embed.pos"],
    "head": ["head"],
    "all": ["*"],
    "all-except-head": ["layers.*", "embed.*"],
}


@dataclass(frozen=True)
class Rule:
    target: str
    method: MethodConfig

    def __post_init__(self):
        if isinstance(self.method, dict):
            object.__setattr__(self, "method", MethodConfig(**self.method))



#: what one spec may hold, wherever it comes from (a link, a file, the CLI): bounded work per evaluation
MAX_RULES = 256
MAX_SPEC_CHARS = 100_000

@dataclass(frozen=True)
class QuantSpec:
    """Ordered rules (later wins), plus for W1A1 attention: ``attn_probs``, a quantizer of the
    attention weights (:data:`binlab.methods.attention.ATTENTION`: ``binary01``, BiBERT's ``bibert``, BiT's
    ``elastic01`` ...) and ``attn_qkv``, an activation quantizer applied to Q, K and V before the
    products (:data:`binlab.methods.activations.ACT_NAMES`: ``sign_unscaled`` for BiBERT, ``elastic`` for BiT)."""

    rules: tuple[Rule, ...] = ()
    attn_probs: str | None = None
    attn_qkv: str | None = None
    attn_residual: int = 0  # rank of BiPFT's low-rank attention residual estimators (0: none)

    def __post_init__(self):
        object.__setattr__(self, "rules", tuple(r if isinstance(r, Rule) else Rule(**r) for r in self.rules))
        if len(self.rules) > MAX_RULES:
            raise ValueError(f"a spec holds at most {MAX_RULES} rules; got {len(self.rules)}")
        if self.attn_probs is not None and self.attn_probs not in ATTENTION:
            raise ValueError(f"attn_probs must be None or one of {sorted(ATTENTION)}, got {self.attn_probs!r}")
        if self.attn_qkv is not None and self.attn_qkv not in ACT_NAMES:
            raise ValueError(f"attn_qkv must be None or one of {list(ACT_NAMES)}, got {self.attn_qkv!r}")
        if isinstance(self.attn_residual, bool) or not isinstance(self.attn_residual, int) or not 0 <= self.attn_residual <= 64:
            raise ValueError(f"attn_residual must be an int rank in [0, 64], got {self.attn_residual!r}")

    @classmethod
    def simple(cls, targets, method: str | MethodConfig = "xnor", **kw) -> "QuantSpec":
        """``QuantSpec.simple("QK", "bucket", options={"tau": 0.3})`` or a list of targets."""
        m = method if isinstance(method, MethodConfig) else MethodConfig(method, **kw)
        targets = [targets] if isinstance(targets, str) else list(targets)
        return cls(tuple(Rule(t, m) for t in targets))

    def to_json(self) -> str:
        d = asdict(self)
        for k, off in (("attn_qkv", None), ("attn_residual", 0)):
            if d[k] == off:
                d.pop(k)  # specs without them keep the JSON (and the cache keys) they had before they existed
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str) -> "QuantSpec":
        """Parse a spec; any problem (syntax, unknown keys, wrong types, unknown methods or options,
        out-of-range values) is a ``ValueError`` saying what is wrong."""
        if isinstance(s, (str, bytes)) and len(s) > MAX_SPEC_CHARS:
            raise ValueError(f"a spec is at most {MAX_SPEC_CHARS:,} characters of JSON; this one has {len(s):,}")
        try:
            d = json.loads(s)
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"spec is not valid JSON: {err}") from err
        if not isinstance(d, dict) or set(d) - {"rules", "attn_probs", "attn_qkv", "attn_residual"}:
            raise ValueError("spec JSON must be an object with keys 'rules' (list) and optionally 'attn_probs', 'attn_qkv', 'attn_residual'")
        rules = d.get("rules", [])
        if not isinstance(rules, list):
            raise ValueError(f"'rules' must be a list, got {type(rules).__name__}")
        out = []
        for i, r in enumerate(rules):
            if not isinstance(r, dict) or set(r) != {"target", "method"}:
                raise ValueError(f"rule {i} must be an object with exactly the keys 'target' and 'method', got {r!r}")
            if not isinstance(r["target"], str) or not 0 < len(r["target"]) <= 200:
                raise ValueError(f"rule {i}: 'target' must be a name or pattern of 1 to 200 characters, got {str(r['target'])[:80]!r}")
            m = r["method"]
            if not isinstance(m, dict) or set(m) - {"method", "options", "ste", "act"} or not isinstance(m.get("method"), str):
                raise ValueError(f"rule {i}: 'method' must be an object with 'method' (a name) and optionally 'options', 'ste', 'act'; got {m!r}")
            if not isinstance(m.get("options", {}), dict):
                raise ValueError(f"rule {i}: 'options' must be an object, got {m.get('options')!r}")
            for k in ("ste", "act"):
                if m.get(k) is not None and not isinstance(m[k], str):
                    raise ValueError(f"rule {i}: {k!r} must be a name or null, got {m[k]!r}")
            try:
                out.append(Rule(r["target"], MethodConfig(**m)))
            except ValueError as err:
                raise ValueError(f"rule {i}: {err}") from err
            except (TypeError, KeyError, AttributeError, OverflowError) as err:  # an option of the wrong type deep in a method
                raise ValueError(f"rule {i}: invalid option value ({err})") from err
        try:
            return cls(rules=tuple(out), attn_probs=d.get("attn_probs"), attn_qkv=d.get("attn_qkv"), attn_residual=d.get("attn_residual", 0))
        except TypeError as err:
            raise ValueError(f"invalid spec: {err}") from err


def is_training_aux(name: str) -> bool:
    """Modules under a quantized component's ``train_aux`` are QAT machinery, not model components."""
    return "train_aux" in name.split(".")


def is_method_state(name: str) -> bool:
    """Modules under a quantized component's ``qparams`` are its method's learned values (stored, but
    counted by the method's own :meth:`~binlab.methods.base.Quantizer.storage`, not as components)."""
    return "qparams" in name.split(".")


def quantizable(model: nn.Module) -> dict[str, nn.Module]:
    """Component name -> module, for every Linear/Embedding (plain or quantized)."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Embedding, QuantLinear, QuantEmbedding)) and not is_training_aux(n)}


def resolve(model: nn.Module, target: str) -> list[str]:
    """Component names a target (group or pattern) selects; ``ValueError`` naming the choices if none."""
    names = list(quantizable(model))
    pats = GROUPS.get(target, [target])
    hit = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if not hit:
        raise ValueError(f"target {target!r} matches no component. Groups: {sorted(GROUPS)}; components: {names}")
    return hit


def plan(model: nn.Module, spec: QuantSpec) -> dict[str, MethodConfig]:
    """Component name -> method, after applying the rules in order."""
    out: dict[str, MethodConfig] = {}
    for rule in spec.rules:
        for n in resolve(model, rule.target):
            out[n] = rule.method
    return out


def set_submodule(model: nn.Module, name: str, module: nn.Module):
    """Put ``module`` at the dotted ``name`` inside ``model`` (replacing what was there)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _plain(m: nn.Module) -> nn.Module:
    if isinstance(m, QuantLinear):
        return m.to_linear()
    if isinstance(m, QuantEmbedding):
        return m.to_embedding()
    return m


def quantize_(model: nn.Module, spec: QuantSpec) -> dict[str, MethodConfig]:
    """Make ``model`` follow ``spec`` (in place): components named by the spec become fake-quantized,
    every other component is restored to full precision. Returns the plan."""
    p = plan(model, spec)
    for name, m in quantizable(model).items():
        want = p.get(name)
        if want is None:
            if isinstance(m, (QuantLinear, QuantEmbedding)):
                set_submodule(model, name, _plain(m))
            continue
        if isinstance(m, (QuantLinear, QuantEmbedding)) and m.method == want:
            continue  # unchanged: keep its cached quantized weight
        base = _plain(m)
        new = QuantLinear.from_linear(base, want) if isinstance(base, nn.Linear) else QuantEmbedding.from_embedding(base, want)
        new.quantizer.bind(name)  # e.g. each component its own noise stream
        if isinstance(m, QuantLinear) and m.act is not None and list(m.act.state_dict()):
            if m.method.act == want.act:
                new.act = m.act  # same input quantizer: keep what it learned (BiT's scale and shift) across a change of weight method
            else:
                carry_state(m.act, new.act)  # BiT's ladder: the 1-bit quantizer starts from the k-bit one's scale and shift
        new.train(m.training)
        set_submodule(model, name, new)
    install_attention_(model, spec)
    return p


def install_attention_(model: nn.Module, spec: QuantSpec) -> None:
    """Give every attention layer the spec's W1A1 attention quantizers (weights, Q/K/V, BiPFT's
    residual); unchanged ones are kept with what they learned."""
    for mod in model.modules():
        if hasattr(mod, "prob_quantizer"):  # an Attention: its quantizers change only when the spec's names do
            if getattr(mod.prob_quantizer, "name", None) != spec.attn_probs:
                old = mod.prob_quantizer
                mod.prob_quantizer = make_attention(spec.attn_probs) if spec.attn_probs else None
                carry_state(getattr(old, "act", None), getattr(mod.prob_quantizer, "act", None))
            have = mod.qkv_quantizer["q"].name if mod.qkv_quantizer is not None else None
            if have != spec.attn_qkv:
                old = mod.qkv_quantizer
                mod.qkv_quantizer = nn.ModuleDict({n: make_act(spec.attn_qkv) for n in "qkv"}) if spec.attn_qkv else None
                if old is not None and mod.qkv_quantizer is not None:
                    for n in "qkv":
                        carry_state(old[n], mod.qkv_quantizer[n])
            if (mod.residual.rank if mod.residual is not None else 0) != spec.attn_residual:
                w = mod.q.weight
                mod.residual = LowRankResidual(w.shape[1], spec.attn_residual).to(w.device, w.dtype) if spec.attn_residual else None


def restore_(model: nn.Module) -> nn.Module:
    """Undo :func:`quantize_`: every component back to a plain module with the same latent weights."""
    quantize_(model, QuantSpec())
    return model


def quantized_modules(model: nn.Module) -> list[_Fake]:
    return [m for m in model.modules() if isinstance(m, _Fake)]


def set_progress(model: nn.Module, frac: float) -> None:
    """Tell every quantized component's method how far QAT has come (ReCU's tau, FDA's noise weight)."""
    for m in quantized_modules(model):
        m.quantizer.set_progress(frac)


def post_step(model: nn.Module) -> None:
    """After an optimiser step: methods that constrain their latent weights (BinaryConnect's clip) do so."""
    for m in quantized_modules(model):
        hook = getattr(m.quantizer, "post_step", None)
        if hook is not None and m.weight.requires_grad:  # frozen weights (e.g. embeddings in QAT) stay as they are
            hook(m.weight)


def current_plan(model: nn.Module) -> dict[str, MethodConfig]:
    return {n: m.method for n, m in quantizable(model).items() if isinstance(m, (QuantLinear, QuantEmbedding))}
