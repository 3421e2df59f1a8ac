"""The runtime's kernels compiled ahead of time: the packed model's speed without numba in the process.

numba compiles binlab's kernels (:mod:`binlab.runtime.kernels`, :mod:`binlab.runtime.elementwise`) at their
first call, and a process that runs them carries numba's compiler: about 110 MiB before any model
(``bench/numba_memory.py``), most of what the torch-free runtime's ``numba`` backend holds. ::

    binlab runtime build          # once per machine: compile the kernels into an extension module
    binlab classify model.safetensors "Stocks rally as oil falls"     # then runs them, numpy alone in the process

:func:`build` compiles the same Python functions with numba's ahead-of-time compiler (``numba.pycc``), for
this machine's CPU (LLVM's ``host`` target: AVX-512 VPOPCNTDQ where the CPU has it), into an extension module
in the cache folder (``<cache>/aot``, or a folder you name). The ``aot`` backend of
:mod:`binlab.runtime.standalone` loads it with :func:`load_kernels`; nothing else in the process compiles.

Where it differs from the ``numba`` backend:

- one thread: numba's parallel loops need numba's threading layer, so each kernel is compiled from its
  Python function without ``parallel`` (the ``numba`` backend's default is one thread too; numpy's BLAS
  keeps both cores for attention and the float32 matrices);
- the module's name carries a digest of the kernels' source, this CPU's model and flags, and the Python
  version: a module built from other kernels or for another CPU is not loaded (:func:`load_kernels` returns
  None and the ``auto`` backend falls back to numba's compiler);
- building needs numba and a C compiler (setuptools links the module); running needs numpy only. numba
  has marked ``numba.pycc`` "pending deprecation" since 0.57 while it develops a successor; where a numba
  without it is installed, :func:`build` says so and the ``numba`` and ``numpy`` backends remain.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import platform
import sys
import warnings
from pathlib import Path

from .fused import KERNELS

#: each kernel's signature (numba's notation): the array layouts and dtypes the runtime passes
SIGNATURES = {
    "w1a1_linear": "void(float32[:, ::1], uint64[:, ::1], float32[::1], float32[::1], float32[::1], int64, float32, float32[:, ::1])",
    "binary_gemm_few_rows": "void(float32[:, ::1], uint8[:, :, ::1], float32[:, ::1], int64)",
    "binary_gemm_many_rows": "void(float32[:, ::1], uint8[:, :, ::1], float32[:, ::1])",
    "unpack_rows": "void(uint64[:, ::1], float32[::1], float32[::1], int64, int64, float32[:, ::1])",
    "gelu": "void(float32[::1])",
    "add_layer_norm": "void(float32[:, ::1], float32[:, ::1], float32[::1], float32[::1], float64, float32[:, ::1])",
    "softmax_shift": "void(float32[:, :, :, ::1], boolean[:, ::1], boolean, float32)",
    "normalize_rows": "void(float32[:, ::1])",
}
assert set(SIGNATURES) == set(KERNELS)

_SOURCES = ("kernels.py", "elementwise.py", "npops.py", "aot.py")


def _cpu() -> str:
    """This CPU's model name and flags (from /proc/cpuinfo; the platform's name where there is none)."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("flags")), "")
    return model + "|" + flags


def module_name() -> str:
    """``binlab_kernels_<digest>``: the digest of the kernels' source, this CPU and this Python."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    h.update(_cpu().encode())
    h.update(f"{sys.implementation.cache_tag}-{platform.machine()}".encode())
    return "binlab_kernels_" + h.hexdigest()[:16]


def default_dir() -> Path:
    from binlab.data import cache_dir

    return cache_dir() / "aot"


def module_path(directory: str | Path | None = None) -> Path:
    """Where this machine's module is (or would be) in ``directory`` (default: ``<cache>/aot``)."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return Path(directory or default_dir()) / (module_name() + suffix)


def load_kernels(directory: str | Path | None = None):
    """This machine's compiled kernels (a module with the names of :data:`binlab.runtime.fused.KERNELS`),
    or None when :func:`build` has not made them here."""
    name = module_name()
    if name in sys.modules:
        return sys.modules[name]
    path = module_path(directory)
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[name] = mod
    return mod


def _forwarder(kernel, n_args: int):
    """A Python function of ``n_args`` arguments that calls ``kernel`` with them: what numba.pycc exports
    (it compiles the exported function with default options; the kernel keeps its own, fastmath included)."""
    args = ", ".join(f"a{i}" for i in range(n_args))
    scope = {"kernel": kernel}
    exec(f"def forward({args}):\n    kernel({args})\n", scope)  # noqa: S102 (fixed text, no input)
    return scope["forward"]


def build(directory: str | Path | None = None, verbose: bool = False) -> Path:
    """Compile the kernels for this machine into ``directory`` (default ``<cache>/aot``); returns the
    module's path (an existing one is rebuilt). 7-8 s on 2 cores (``aot_build_s`` in docs/results/bench-deploy-*.json)."""
    try:
        import numba

        with warnings.catch_warnings():  # numba marks pycc "pending deprecation" (since 0.57) while a successor is developed
            warnings.simplefilter("ignore")
            from numba.pycc import CC
    except ImportError as err:
        raise RuntimeError(f"building the kernels ahead of time needs numba with its pycc compiler ({err}); "
                           "pip install numba, or run the numba or numpy backend instead") from None
    from .kernels import JIT as jit

    out = module_path(directory)
    out.parent.mkdir(parents=True, exist_ok=True)
    cc = CC(module_name())
    cc.output_dir = str(out.parent)
    cc.target_cpu = "host"
    cc.verbose = verbose
    for name in KERNELS:
        dispatcher = getattr(jit, name)
        options = {k: v for k, v in dispatcher.targetoptions.items() if k not in ("parallel", "cache", "nopython")}
        serial = numba.njit(**options)(dispatcher.py_func)  # prange runs as range without parallel
        n_args = len(numba.core.sigutils.normalize_signature(SIGNATURES[name])[0])
        cc.export(name, SIGNATURES[name])(_forwarder(serial, n_args))
    try:
        cc.compile()
    except Exception as err:  # distutils/setuptools: no C compiler, no Python headers
        raise RuntimeError(f"compiling the kernels ahead of time failed ({type(err).__name__}: {err}); a C compiler and "
                           "Python's headers are needed (e.g. apt install build-essential python3-dev)") from err
    return out


def ops(directory: str | Path | None = None):
    """The runtime's operations (:func:`binlab.runtime.fused.ops`) on the compiled kernels; raises
    ``RuntimeError`` with what to run when they are not built on this machine."""
    from . import bitpack, fused

    mod = load_kernels(directory)
    if mod is None:
        raise RuntimeError(f"the kernels are not compiled for this machine (no {module_path(directory)}): "
                           "run `binlab runtime build` once, or choose the numba or numpy backend")
    bitpack.use_unpack_kernel(mod.unpack_rows)
    return fused.ops(mod)
