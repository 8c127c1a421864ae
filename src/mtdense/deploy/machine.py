"""What a speed figure was measured on: the CPU, its vector flags, the libraries, the load.

A timing on a shared machine means little without the load that other processes put on it,
so :func:`machine_info` records the load average, and :func:`wait_for_idle` waits for (or
refuses) a busy machine before a benchmark starts.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mtdense.deploy.openvino import openvino_available

__all__ = ["MachineBusy", "machine_info", "cpu_flags", "load_average", "wait_for_idle", "IDLE_LOAD"]

IDLE_LOAD = 0.5
"""A machine whose 1-minute load average is at most this counts as idle."""

# The flags that decide which kernels the runtimes pick (fp32 FMA, wide vectors, int8 dot products).
_FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                      "avx512_bf16", "amx_tile", "amx_int8", "neon", "asimd", "asimddp")


class MachineBusy(ValueError):
    """The machine stayed busier than a benchmark allows; the message gives the load and what to do."""


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> list[str]:
    """The CPU's vector and dot-product flags that matter for inference speed (Linux; else empty)."""
    found = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", _cpuinfo(), re.MULTILINE)
    flags = set(found.group(1).split()) if found else set()
    return [f for f in _FLAGS_OF_INTEREST if f in flags]


def int8_saturates() -> bool:
    """Whether this CPU multiplies int8 with ``vpmaddubsw`` (x86 without VNNI), which adds pairs of
    uint8 x int8 products with 16-bit saturation: full-range 8-bit weights then overflow, and ONNX
    Runtime's advice is 7-bit weights (``reduce_range``). False on VNNI CPUs and off x86."""
    flags = set(cpu_flags())
    x86 = bool(flags & {"sse4_2", "avx", "avx2"})
    return x86 and not flags & {"avx512_vnni", "avx_vnni"}


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or ``None`` where the OS has none."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def wait_for_idle(max_load: float = IDLE_LOAD, timeout_s: float = 300.0, poll_s: float = 5.0,
                  log: Callable[[str], None] = print) -> float | None:
    """Wait until the 1-minute load average is at most ``max_load``; return it.

    The 1-minute average decays with a one-minute time constant, so a machine that has just
    become idle needs a minute or two to show it.

    Raises:
        MachineBusy: still over ``max_load`` after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    load = load_average()
    said = False
    while load is not None and load > max_load:
        if time.monotonic() >= deadline:
            raise MachineBusy(
                f"load average {load:.2f} > {max_load} after waiting {timeout_s:.0f} s: other processes share the CPU and "
                "would skew the timings; stop them, or wait longer (--require-idle SECONDS), or drop --require-idle "
                "and read the ratios (measured side by side) rather than the milliseconds"
            )
        if not said:
            log(f"[bench] load average {load:.2f} > {max_load}: waiting up to {timeout_s:.0f} s for an idle machine ...")
            said = True
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        load = load_average()
    return load


def machine_info(device: str = "cpu") -> dict[str, str]:
    """CPU model and flags, cores, thread counts, library versions, load and (for CUDA) the GPU."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    found = re.search(r"model name\s*:\s*(.+)", _cpuinfo())
    if found:
        cpu = found.group(1).strip()
    info = {
        "cpu": cpu,
        "cpu flags": " ".join(cpu_flags()) or "unknown",
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        **({"openvino": _openvino_version()} if openvino_available() else {}),
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }
    load = load_average()
    if load is not None:  # other processes on the machine slow every row
        info["load"] = f"{load:.2f}"
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = str(torch.version.cuda)
    return info


def _openvino_version() -> str:
    try:
        import openvino

        return openvino.get_version().split("-")[0]
    except Exception:  # a broken install: the ov row reports why
        return "unknown"
