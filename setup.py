"""Builds the optional native CPU kernels (the `gptoss.ops.native_ext` C extension).

Metadata lives in pyproject.toml; this file only adds the extension. The build is optional: when the compiler is
missing or fails, installation still succeeds and gptoss runs on the plain-torch reference ops (ops/__init__.py
says so once on stderr). The kernels use pthreads; without them they still build, single-threaded.
Set GPTOSS_BUILD_NATIVE=0 to skip the extension on purpose.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SRC = Path("src/gptoss/ops/native_src")
SOURCES = [
    str(SRC / f)
    for f in (
        "module.c", "moe.c", "dense.c", "attention.c", "norm.c", "pool.c",
        "kernels_scalar.c", "kernels_avx2.c", "kernels_avx512.c", "amx.c", "dequant.c",
    )
]  # fmt: skip
HEADERS = ("moe.h", "dense.h", "dequant.h", "attention.h", "norm.h", "bf16.h", "avx2.h", "avx512.h", "pool.h")


def _say(msg: str) -> None:
    print(f"gptoss: {msg}", file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """build_ext that tries with pthreads, then without threads, then gives up without failing the install."""

    failed = False

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # e.g. no C compiler at all, or (editable) nothing to copy after a failed build
            if not self.failed:
                _say(f"could not build the native CPU kernels ({e}); gptoss will use the reference ops")

    def build_extension(self, ext: Extension) -> None:
        unix = self.compiler.compiler_type == "unix"
        # -fno-wrapv undoes Python's default -fwrapv, with which gcc keeps the GEMM accumulators on the stack.
        base = ["-O3", "-fno-wrapv", "-fvisibility=hidden", "-Wall"] if unix else ["/O2"]
        attempts = [(["-pthread"], ["-pthread"]), (["-DGPTOSS_NO_THREADS"], [])]
        if not unix:
            attempts = [(["-DGPTOSS_NO_THREADS"], [])]
        err: Exception | None = None
        for cflags, ldflags in attempts:
            ext.extra_compile_args = base + cflags
            ext.extra_link_args = ldflags
            try:
                super().build_extension(ext)
            except Exception as e:  # compiler errors come in several types (CompileError, LinkError, OSError)
                err = e
                self.force = True  # rebuild every object on the next attempt
                continue
            if "-DGPTOSS_NO_THREADS" in cflags:
                _say("built the native kernels without threads: they will run single-threaded")
            return
        self.failed = True
        _say(f"could not build the native CPU kernels ({err}); gptoss will use the reference ops")


ext_modules = []
if os.environ.get("GPTOSS_BUILD_NATIVE", "1") != "0":
    ext_modules.append(
        Extension(
            "gptoss.ops.native_ext",
            sources=SOURCES,
            depends=[str(SRC / h) for h in HEADERS],
            include_dirs=[str(SRC)],
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
