"""Compatibility re-export: the methods live in :mod:`binlab.methods` (one family per module)."""
from .methods import *  # noqa: F401,F403
from .methods import BINARIZERS, FP_BITS, Quantizer, register, sign  # noqa: F401
from .methods.base import n_groups as _n_groups, numel as _numel, reduce_dims as _reduce_dims  # noqa: F401
from .methods.classic import FDA, XNOR, BiReal, Bucket, ReCU, Sign, Stochastic, optimal_threshold  # noqa: F401
from .methods import BiLLM, OneBit, PBLLM  # noqa: F401
from .methods.lowbit import TWN, BitNet, BitNet158, Uniform, uniform_midrise  # noqa: F401
