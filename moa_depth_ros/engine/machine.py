"""What machine this is, as the engines and the benchmarks both name it.

The backend choice keys its cached verdict on the CPU name, and ``moa-depth bench`` reports
the same name, so one reader of ``/proc/cpuinfo`` serves both. It lives in the engine layer
(the lower of the two) so ``engine/`` never imports ``bench/``. Standard library only.
"""

from __future__ import annotations

import platform

# The matrix-math ISA extensions a CPU report names.
ISA_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_bf16', 'amx_int8')


def cpu_description(cpuinfo: str = '/proc/cpuinfo') -> tuple[str, list[str]]:
    """Return the CPU's model name and the matrix-math ISA extensions it reports."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo, encoding='utf-8') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name' and name in ('', platform.machine(), 'x86_64'):
                    name = value.strip()
                elif key.strip() in ('flags', 'Features'):  # x86 / arm64
                    flags = set(value.split())
    except OSError:
        pass
    return name, [flag for flag in ISA_FLAGS if flag in flags]
