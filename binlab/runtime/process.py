"""What a process that runs only the torch-free runtime sets up before it loads a model (``binlab classify`` and
``binlab generate`` call both; the deploy bench's torch-free processes do the same): scipy kept out of it, and
glibc's allocator told to keep freed arrays for the next batch.
"""
from __future__ import annotations

import sys


class _NoScipy:
    """An import hook that finds no ``scipy`` (see :func:`keep_scipy_out`)."""

    def find_spec(self, name, path=None, target=None):
        if name == "scipy" or name.startswith("scipy."):
            raise ModuleNotFoundError(f"No module named {name!r} (kept out of this process by binlab's runtime)", name=name)
        return None


def keep_scipy_out() -> bool:
    """Keep scipy out of a process that only runs this runtime (``binlab classify`` and ``binlab generate``
    call it before numba starts). When numba's compiler starts, at the first kernel call, it imports
    scipy's BLAS and LAPACK (for ``np.dot`` and ``np.linalg`` inside compiled code, which binlab's kernels
    never use), and scipy brings its own OpenBLAS: about 15 MiB of the process's memory
    (bench/numba_memory.py). After this call nothing in the process can import scipy,
    and numba's compiled code has no linear algebra. Returns False (and changes nothing) where scipy or
    numba's compiler is already loaded."""
    if "scipy" in sys.modules or "numba.np.arraymath" in sys.modules:
        return False
    if not any(isinstance(f, _NoScipy) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoScipy())
    return True


def hold_freed_memory(mmap_threshold: int = 32 << 20) -> bool:
    """Let glibc's allocator serve arrays up to ``mmap_threshold`` bytes from its heap and keep freed heap memory for
    the next pass (``mallopt``: M_MMAP_THRESHOLD, and M_TRIM_THRESHOLD at twice it), in a process that runs only this
    runtime (``binlab classify`` and ``binlab generate`` call it). By default glibc maps each array of more than
    128 KiB afresh and returns it on free, so every pass pays page faults on new memory (bench/deploy.py gives fp32
    torch the same setting through GLIBC_TUNABLES beside its default and reports both). Returns False where the C library has no ``mallopt`` (not glibc)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(mallopt(m_mmap_threshold, int(mmap_threshold))) and bool(mallopt(m_trim_threshold, 2 * int(mmap_threshold)))


def status_mib(field: str, pid: int | str = "self") -> float | None:
    """A memory line of a process's ``/proc/<pid>/status`` in MiB (``VmRSS``: resident now, ``VmHWM``: its peak);
    None where there is no such file (not Linux) or line."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_memory_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` on Linux (it restarts at ``exec``, so a child started from
    a large parent reports its own), else ``getrusage``'s ``ru_maxrss`` (kilobytes on Linux, bytes on macOS)."""
    peak = status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
