"""The compiled step (`step.cpp`): built once per host by the system's C++ compiler; ctypes.

Why a compiled step: at the map's sizes, a step of the batched MLP is some 40 small ATen
kernels, and their dispatch cost more than their arithmetic (issue "The engine"). The
compiled step does forward, BCE and backward of every member in one call and Adam over every
tensor in another; measured per epoch against the ATen step it replaced, in the same run
(`make bench`, 2026-12-03): 3.7x faster on 16 one-layer cells of 1..16 units, 1.71x on
17..32 x 2 layers and 1.22x on 49..64 x 4.

Why it gives a member the same bits alone, in any batch and at any vector width (SSE2, AVX2,
AVX-512; with the same compiler and C library): see the head of `step.cpp`. The flags that
hold it: no `-ffast-math` (no reordered sums), and `-ffp-contract=off` (no multiply-add fused
into one rounding on one host and two on another). `-march=native` only chooses the
registers; `tests/test_native.py` builds the same source for plain x86-64 (SSE2) beside it
and checks that both give the same bits.

The library is cached per source, flags and CPU under `$XDG_CACHE_HOME/mlpsweep` (default
`~/.cache/mlpsweep`), written to a temporary name and renamed, so workers that start together
neither rebuild it each nor load half a file.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("step.cpp")
COMMON_FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno", "-Wno-psabi", "-shared", "-fPIC")
NATIVE_ARCH = "-march=native"
PORTABLE_ARCH = "-march=x86-64"  # SSE2 only: what `tests/test_native.py` compares against


class NativeBuildError(RuntimeError):
    """The compiled step could not be built (no C++ compiler, or it failed)."""


def compiler() -> str:
    """The C++ compiler: `$CXX`, else g++ or c++ on the PATH."""
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return name
    raise NativeBuildError(
        "the compiled training step needs a C++ compiler (g++): install it "
        "(Debian: apt-get install g++) or set CXX"
    )


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlpsweep"


def cpu_signature() -> str:
    """What `-march=native` depends on: the CPU's model and flags (hosts of a cluster differ)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keys = ("model name", "flags")
    lines = [line for line in text.splitlines() if line.split(":")[0].strip() in keys]
    return "\n".join(sorted(set(lines)))


def library_path(arch: str) -> Path:
    """Where the build for `arch` is cached: named by a hash of everything that shapes it."""
    cxx = compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = "\n".join([SOURCE.read_text(), " ".join(COMMON_FLAGS), arch, version, cpu_signature()])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / f"step-{arch.removeprefix('-march=')}-{digest}.so"


def build(arch: str) -> Path:
    """The library for `arch`, compiled unless its cached copy exists."""
    target = library_path(arch)
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".so.partial")
    except OSError as error:
        raise NativeBuildError(
            f"the compiled training step's cache {target.parent} cannot be written "
            f"({error.strerror}): set XDG_CACHE_HOME to a writable folder"
        ) from error
    os.close(handle)
    command = [compiler(), *COMMON_FLAGS, arch, "-o", partial, str(SOURCE)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        Path(partial).unlink(missing_ok=True)
        first = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise NativeBuildError(f"building the compiled training step failed: {first}")
    os.replace(partial, target)
    return target


POINTERS = ctypes.POINTER(ctypes.c_void_p)


def declare(library: ctypes.CDLL) -> ctypes.CDLL:
    """The C signatures, so ctypes converts and checks every argument."""
    int_, ptr, dbl = ctypes.c_int, ctypes.c_void_p, ctypes.c_double
    library.mlp_scratch_floats.restype = ctypes.c_long
    library.mlp_scratch_floats.argtypes = [int_, int_, int_]
    library.mlp_gradients.restype = int_
    library.mlp_gradients.argtypes = [int_] * 4 + [ptr, ptr, POINTERS, POINTERS] + [ptr] * 3
    library.adam_update.restype = None
    library.adam_update.argtypes = [int_] + [POINTERS] * 5 + [ptr] + [dbl] * 5
    return library


@functools.cache
def load(arch: str = NATIVE_ARCH) -> ctypes.CDLL:
    """The compiled step for this host (built on first use), or for `arch`."""
    return declare(ctypes.CDLL(str(build(arch))))
