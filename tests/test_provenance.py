"""A table says which machine measured it, and whether that machine's vector unit was recorded."""
import pytest

from binlab.experiments.provenance import hardware_text, machine_text, vector_summary


@pytest.mark.parametrize("flags, want", [(["avx2", "avx512f", "avx512_vpopcntdq"], "AVX-512 with VPOPCNTDQ"),
                                         (["avx2", "avx512f"], "AVX-512"), (["sse4_2", "avx2"], "AVX2"), (["sse4_2"], "no AVX2")])
def test_vector_summary_names_what_the_kernels_can_use(flags, want):
    assert vector_summary(flags) == want


@pytest.mark.parametrize("cpu", ["AMD EPYC", "Intel(R) Xeon(R) Processor"])
@pytest.mark.parametrize("vector", ["AVX-512 with VPOPCNTDQ", "AVX-512", "AVX2", "no AVX2"])
def test_a_recorded_vector_unit_is_shown_as_recorded(cpu, vector):
    m = hardware_text({"cpu": cpu, "vector": vector, "cores": 2, "gpu": None}) + ", torch 2.13.0+cpu"
    assert machine_text(m) == m


@pytest.mark.parametrize("old, want", [
    ("AMD EPYC, 2 cores, no GPU, torch 2.13.0+cpu", "AMD EPYC (vector unit not recorded), 2 cores, no GPU, torch 2.13.0+cpu"),
    ("Intel(R) Xeon(R) Processor, 2 cores, no GPU, torch 2.13.0+cpu",
     "Intel(R) Xeon(R) Processor (vector unit not recorded), 2 cores, no GPU, torch 2.13.0+cpu")])
def test_a_table_from_before_the_vector_unit_was_recorded_says_so(old, want):
    """The committed tables' older machine strings (the Intel one has parentheses of its own)."""
    assert machine_text(old) == want
