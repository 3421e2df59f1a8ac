"""The runtime's kernels compiled ahead of time (binlab.runtime.aot): each against a float64 reference
written here, the module found only for the kernels and the CPU it was built from, and ``auto`` choosing it."""
import numpy as np
import pytest

from binlab.runtime import aot, fused, standalone
from binlab.runtime.bitpack import pack_bits


@pytest.fixture(scope="module")
def compiled(aot_built):
    mod = aot.load_kernels()
    assert mod is not None and all(callable(getattr(mod, k)) for k in fused.KERNELS)
    return mod


@pytest.mark.parametrize("M, K, N", [(1, 70, 33), (5, 384, 17), (8, 64, 40), (13, 129, 9)])
@pytest.mark.parametrize("scale", [None, 0.75])
def test_w1a1_linear_is_the_float64_product_of_signs_and_levels(compiled, M, K, N, scale):
    rng = np.random.default_rng(M * K + N)
    X = rng.normal(0, 1, (M, K)).astype(np.float32)
    B = rng.integers(0, 2, (N, K))
    lo, hi = -rng.uniform(0.1, 1, N).astype(np.float32), rng.uniform(0.1, 1, N).astype(np.float32)
    bias = rng.normal(0, 1, N).astype(np.float32)
    x64 = X.astype(np.float64)
    a = np.abs(x64).mean(1, keepdims=True) if scale is None else scale
    want = (a * np.where(x64 >= 0, 1.0, -1.0)) @ np.where(B == 1, hi[:, None], lo[:, None]).astype(np.float64).T + bias
    got = fused.w1a1_linear(compiled, X, np.ascontiguousarray(pack_bits(B, signed=False).T), lo, hi, bias, K, scale)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("rows", [1, 3, 40])  # few rows (split along K) and many rows (one table set per row)
def test_binary_gemm_sums_the_inputs_where_bits_are_set(compiled, rows):
    rng = np.random.default_rng(rows)
    K, N = 200, 31
    X = rng.normal(0, 1, (rows, K)).astype(np.float32)
    B = rng.integers(0, 2, (N, K))
    got = fused.binary_gemm(compiled, 1, X, fused.LutWeights(pack_bits(B, signed=False), K), K)
    np.testing.assert_allclose(got, X.astype(np.float64) @ B.T, rtol=1e-5, atol=1e-4)


def test_unpack_rows_decodes_a_tile(compiled):
    rng = np.random.default_rng(3)
    K, N = 100, 12
    B = rng.integers(0, 2, (N, K))
    lo, hi = rng.normal(0, 1, N).astype(np.float32), rng.normal(0, 1, N).astype(np.float32)
    out = np.empty((5, K), np.float32)
    compiled.unpack_rows(pack_bits(B, signed=False), lo, hi, np.int64(K), np.int64(4), out)
    np.testing.assert_array_equal(out, np.where(B[4:9] == 1, hi[4:9, None], lo[4:9, None]))


def test_tiles_decode_with_the_compiled_kernel_once_it_is_loaded(aot_built, monkeypatch):
    """With the aot backend loaded, tiles decode with its kernel even where numba's kernels are imported too
    (a process that builds them imports them), and give the same values as numpy's decoding."""
    import binlab.runtime.kernels  # noqa: F401 - numba's kernels in this process as well
    from binlab.runtime import bitpack

    monkeypatch.setattr(bitpack, "_UNPACK_KERNEL", [None])
    aot.ops()  # what the aot backend runs when a model loads
    calls, kernel = [], bitpack._UNPACK_KERNEL[0]
    assert kernel is not None
    monkeypatch.setattr(bitpack, "_UNPACK_KERNEL", [lambda *a: calls.append(1) or kernel(*a)])
    rng = np.random.default_rng(5)
    B = rng.integers(0, 2, (9, 77))
    lo, hi = rng.normal(0, 1, 9).astype(np.float32), rng.normal(0, 1, 9).astype(np.float32)
    got = bitpack.dequant_rows(pack_bits(B, signed=False), lo, hi, 77, 2, 7)
    assert calls == [1]
    np.testing.assert_array_equal(got, np.where(B[2:7] == 1, hi[2:7, None], lo[2:7, None]))


def test_a_module_for_other_kernels_or_another_cpu_is_not_loaded(aot_built, tmp_path, monkeypatch):
    """The module's name digests the kernels' source and this CPU: change either and it is not found, and
    ``auto`` falls back to numba's compiler; with it, ``auto`` is ``aot``."""
    assert aot.module_path() == aot_built and standalone.resolve_backend("auto") == "aot"
    monkeypatch.setattr(aot, "_cpu", lambda: "another CPU|avx2")
    assert aot.load_kernels() is None and standalone.resolve_backend("auto") == "numba"
    with pytest.raises(RuntimeError, match="binlab runtime build"):
        aot.ops()
    monkeypatch.undo()
    assert aot.load_kernels(tmp_path) is not None  # already loaded in this process: found by name
    monkeypatch.setattr(aot, "_SOURCES", aot._SOURCES[:-1])  # other source, other name
    assert aot.load_kernels() is None


def test_unknown_backends_are_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        standalone.resolve_backend("llvm")


def test_a_runtime_process_keeps_freed_arrays_where_glibc_allows():
    """hold_freed_memory sets glibc's thresholds through mallopt (True there); elsewhere it changes nothing."""
    import platform
    import subprocess
    import sys

    code = "from binlab.runtime.process import hold_freed_memory; print(hold_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1000:]
    assert out.stdout.strip() == str(platform.libc_ver()[0] == "glibc")


def test_peak_memory_is_the_processs_own():
    """A child started from this (larger) process reports its own peak, not the parent's."""
    import subprocess
    import sys

    from binlab.runtime.process import peak_memory_mib

    ballast = bytearray(200 * 2**20)  # noqa: F841 (held: this process's peak is over 200 MiB)
    here = peak_memory_mib()
    code = "from binlab.runtime.process import peak_memory_mib; print(peak_memory_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout)
    assert here > 200 and 5 < child < 150, (here, child)
