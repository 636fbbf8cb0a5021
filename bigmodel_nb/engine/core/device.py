"""Which device to train on, what it can do, and which mixed precision to use there.

CUDA and ROCm both appear through ``torch.cuda``; Apple GPUs through MPS; the CPU is
always last. Detection never raises: a broken driver shows up as a missing device.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field

import torch

from .errors import BigModelError, describe_exception

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
_AMP_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "none": "off", "fp32": "off",
                "float32": "off", "false": "off", "no": "off", "true": "auto", "on": "auto"}
_DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_default: torch.device | None = None  # set by set_default_device (the %device magic)


@dataclass
class DeviceInfo:
    """One detected device and what it can do. Example: ``detect_devices()[0].banner()``"""

    name: str  # "cuda:0", "mps", "cpu"
    kind: str  # "cuda" | "mps" | "cpu"
    label: str  # human name, e.g. "NVIDIA H100 80GB HBM3"
    total_memory: int | None = None  # bytes
    free_memory: int | None = None
    capability: tuple[int, int] | None = None
    precisions: list[str] = field(default_factory=list)  # usable training precisions, e.g. ["fp32", "bf16", "fp16"]
    threads: int | None = None

    def banner(self) -> str:
        """One line. Example: ``"cuda:0 NVIDIA H100 80GB HBM3 · bf16"`` or ``"cpu · 2 threads"``"""
        if self.kind == "cpu":
            return f"cpu · {self.threads} thread{'s' if self.threads != 1 else ''}"
        return f"{self.name} {self.label} · {_auto_precision(self.kind, self.precisions)}"

    def as_row(self) -> dict:
        """A plain dict for tables. Example: ``[d.as_row() for d in detect_devices()]``"""
        row = asdict(self)
        row["capability"] = f"{self.capability[0]:d}.{self.capability[1]:d}" if self.capability else None
        row["precisions"] = ", ".join(self.precisions)
        return row


def _auto_precision(kind: str, precisions: list[str]) -> str:
    """What --amp auto picks on this kind of device (MPS and CPU train in fp32 by default)."""
    if kind == "cuda":
        return "bf16" if "bf16" in precisions else "fp16"
    return "fp32"


# -- detection ------------------------------------------------------------------------------
def detect_devices() -> list[DeviceInfo]:
    """Every accelerator, then the CPU. Never raises. Example: ``[d.name for d in detect_devices()]``"""
    found: list[DeviceInfo] = []
    for probe in (_cuda_devices, _mps_devices):
        try:
            found.extend(probe())
        except Exception:  # a broken driver must not break %load_ext: the device is just not listed
            pass
    found.append(_cpu_device())
    return found


def _cuda_devices() -> list[DeviceInfo]:
    if not torch.cuda.is_available():
        return []
    rocm = getattr(torch.version, "hip", None)
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        free = total = None
        try:
            free, total = torch.cuda.mem_get_info(i)  # creates a context on that GPU; fine once per %device
        except Exception:
            total = getattr(props, "total_memory", None)
        bf16 = _native_bf16(props)
        label = f"{props.name} (ROCm)" if rocm and "ROCm" not in props.name else props.name
        out.append(DeviceInfo(name=f"cuda:{i}", kind="cuda", label=label, total_memory=total, free_memory=free,
                              capability=(props.major, props.minor),
                              precisions=["fp32", "bf16", "fp16"] if bf16 else ["fp32", "fp16"]))
    return out


def _native_bf16(props) -> bool:
    # Not torch.cuda.is_bf16_supported(): it asks about the current GPU only and, in recent torch,
    # says True on pre-Ampere GPUs that merely emulate bf16 (slower than fp32 there).
    if getattr(torch.version, "hip", None):
        return True  # every ROCm GPU torch supports has bf16
    return props.major >= 8


def _mps_devices() -> list[DeviceInfo]:
    if not _mps_available():
        return []
    total = _safe(lambda: torch.mps.recommended_max_memory(), None)  # unified memory: what Metal allows us
    used = _safe(lambda: torch.mps.driver_allocated_memory(), None)
    free = total - used if total is not None and used is not None else None
    return [DeviceInfo(name="mps", kind="mps", label="Apple MPS", total_memory=total, free_memory=free,
                       precisions=_mps_precisions())]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _mps_precisions() -> list[str]:
    # MPS autocast has fp16; bf16 needs macOS 14 or later (torch disables autocast otherwise).
    mac = platform.mac_ver()[0]
    major = int(mac.split(".")[0]) if mac else 0
    return ["fp32", "fp16", "bf16"] if major >= 14 else ["fp32", "fp16"]


def _cpu_device() -> DeviceInfo:
    total, free = _ram()
    return DeviceInfo(name="cpu", kind="cpu", label=_cpu_label(), total_memory=total, free_memory=free,
                      precisions=["fp32", "bf16"], threads=torch.get_num_threads())


def _cpu_label() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _ram() -> tuple[int | None, int | None]:
    """(total, available) bytes of system memory, None where the OS does not say."""
    total = _safe(lambda: os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), None)
    free = None
    try:  # MemAvailable counts reclaimable cache, unlike SC_AVPHYS_PAGES
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except OSError:
        free = _safe(lambda: os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), None)
    return total, free


def _safe(fn, default):
    try:
        return fn()
    except Exception:
        return default


# -- choosing a device ----------------------------------------------------------------------
def default_device() -> torch.device:
    """The device set with `set_default_device`, else the best available (cuda:0 > mps > cpu).

    Example: ``model.to(default_device())``
    """
    if _default is not None:
        return _default
    if _safe(torch.cuda.is_available, False) and _safe(torch.cuda.device_count, 0) > 0:
        return torch.device("cuda", 0)
    if _safe(_mps_available, False):
        return torch.device("mps")
    return torch.device("cpu")


def set_default_device(spec: str | torch.device | None) -> torch.device:
    """Make `spec` the device that "auto" means from now on; None or "auto" clears it.

    Example: ``set_default_device("cpu")``
    """
    global _default
    _default = None if spec is None or str(spec).strip().lower() == "auto" else resolve_device(spec)
    return default_device()


def resolve_device(spec: str | int | torch.device | None = None) -> torch.device:
    """A concrete, available device from "auto", "cpu", "cuda", "cuda:1", "mps" (or a torch.device).

    Example: ``resolve_device("cuda")  # device(type='cuda', index=0)``
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "auto")):
        return default_device()
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = f"cuda:{spec}"
    text = str(spec).strip().lower()
    try:
        device = spec if isinstance(spec, torch.device) else torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        hint = difflib.get_close_matches(text.split(":")[0], ["auto", "cpu", "cuda", "mps"], n=1)
        did = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise BigModelError(f"Unknown device '{spec}'; choose one of: {', '.join(_DEVICE_CHOICES)}{did}.")
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "mps":
        if not _safe(_mps_available, False):
            raise BigModelError("Apple MPS is not available on this machine; use --device cpu or auto.")
        return torch.device("mps")
    count = _safe(torch.cuda.device_count, 0) if _safe(torch.cuda.is_available, False) else 0
    if count == 0:
        raise BigModelError("CUDA is not available on this machine; use --device cpu or auto.")
    index = device.index if device.index is not None else _safe(torch.cuda.current_device, 0)
    if index >= count:
        have = ", ".join(f"cuda:{i}" for i in range(count))
        raise BigModelError(f"cuda:{index} does not exist; this machine has {count} CUDA "
                            f"device{'s' if count > 1 else ''} ({have}).")
    return torch.device("cuda", index)


# -- mixed precision ------------------------------------------------------------------------
@dataclass(frozen=True)
class AmpPolicy:
    """The autocast dtype (None = off) and whether a GradScaler is needed.

    Example: ``AmpPolicy(torch.bfloat16, False).name``
    """

    dtype: torch.dtype | None
    use_scaler: bool = False

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "off")


def amp_choice(amp: str | None) -> str:
    """`amp` as one of AMP_CHOICES, or one sentence if it is none of them. Example: ``amp_choice("half")  # "fp16"``"""
    choice = "auto" if amp is None else str(amp).strip().lower()
    choice = _AMP_ALIASES.get(choice, choice)
    if choice not in AMP_CHOICES:
        hint = difflib.get_close_matches(choice, AMP_CHOICES, n=1)
        did = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise BigModelError(f"Unknown --amp value '{amp}'; choose one of: {', '.join(AMP_CHOICES)}{did}.")
    return choice


def resolve_amp(amp: str | None, device: str | torch.device) -> AmpPolicy:
    """The mixed-precision policy for `amp` ("auto", "bf16", "fp16", "off") on `device`.

    Example: ``resolve_amp("auto", torch.device("cpu")).name  # "off"``
    """
    device, choice = torch.device(device), amp_choice(amp)
    if choice == "off":
        return AmpPolicy(None, False)
    kind = device.type
    if kind == "cuda":
        bf16 = _cuda_bf16(device)
        if choice == "auto":
            choice = "bf16" if bf16 else "fp16"
        if choice == "bf16" and not bf16:
            raise BigModelError(f"bf16 autocast is not supported on {_cuda_name(device)}; use --amp fp16 or off.")
        # fp16 has a narrow exponent range: small gradients underflow without loss scaling.
        return AmpPolicy(torch.bfloat16, False) if choice == "bf16" else AmpPolicy(torch.float16, True)
    if kind == "mps":
        if choice == "auto":
            return AmpPolicy(None, False)  # not verified to be faster and stable on MPS: stay in fp32
        if choice not in _mps_precisions():
            raise BigModelError(f"{choice} autocast on mps needs macOS 14 or later; use --amp fp16 or off.")
        # GradScaler supports MPS; fp16 without it would silently lose small gradients.
        return AmpPolicy(torch.bfloat16, False) if choice == "bf16" else AmpPolicy(torch.float16, True)
    if choice == "auto":
        return AmpPolicy(None, False)  # CPU bf16 autocast is slower than fp32 on most CPUs
    if choice == "fp16":
        raise BigModelError(f"fp16 autocast is not supported on {kind}; use --amp bf16 or off.")
    return AmpPolicy(torch.bfloat16, False)


def _cuda_bf16(device: torch.device) -> bool:
    index = device.index if device.index is not None else 0
    return _safe(lambda: _native_bf16(torch.cuda.get_device_properties(index)), False)


def _cuda_name(device: torch.device) -> str:
    index = device.index if device.index is not None else 0
    props = _safe(lambda: torch.cuda.get_device_properties(index), None)
    if props is None:
        return f"cuda:{index}"
    return f"cuda:{index} ({props.name}, compute capability {props.major}.{props.minor})"


# -- torch.compile: what this device needs for it -------------------------------------------
def check_compile(device: torch.device) -> None:
    """Say in one sentence why torch.compile cannot work here, before any training starts."""
    if not hasattr(torch, "compile"):
        raise BigModelError("--compile needs PyTorch 2 or later; upgrade torch or drop --compile.")
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise BigModelError("--compile on a GPU needs Triton, which is not installed; pip install triton, "
                            "or drop --compile.")
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("cc", "gcc", "clang", "g++")):
        raise BigModelError("--compile on the CPU needs a C++ compiler and none was found; install one "
                            "(Debian: apt-get install g++) or drop --compile.")


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(model)``: a wrapper sharing the model's parameters (the model itself is unchanged)."""
    return torch.compile(model)


def compile_failure(exc: Exception) -> str:
    return (f"torch.compile could not compile this model ({describe_exception(exc)}); train without --compile, "
            "or see https://pytorch.org/docs/stable/torch.compiler_troubleshooting.html.")
