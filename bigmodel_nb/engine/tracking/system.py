"""Live system metrics: a daemon thread samples the process about once a second while a run trains —
CPU and resident memory (psutil), and on CUDA the GPU's utilisation, memory and temperature
(nvidia-ml-py) with PyTorch's own allocated memory — into `run.system`, and emits each sample on the
run's bus (`on_system`), where the log writer and the dashboard read it.

    run = Run(model, "digits", TrainConfig(epochs=3), [SystemSampler()]).run_here(); run.system[-1]
"""
from __future__ import annotations

import logging
import threading
import time

import torch

from ..core.callbacks import Callback

log = logging.getLogger("bigmodel_nb")
PERIOD_S = 1.0


class SystemSampler(Callback):
    """Samples at ~1 Hz from `on_train_begin` to `on_train_end`: ``time`` (s since the run began),
    ``cpu_percent`` (this process, 100 per busy core), ``rss_bytes``, and on CUDA ``gpu_util``,
    ``gpu_memory_bytes`` (the device's used memory), ``gpu_temperature``, ``torch_memory_bytes``."""

    def __init__(self, period: float = PERIOD_S):
        self.period = period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = self._gpu = None

    def on_train_begin(self, run, logs):
        try:
            import psutil
        except ImportError:  # psutil comes with ipykernel; without it there is nothing to sample
            return
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call starts the measurement interval
        device = getattr(run, "device", None)
        if isinstance(device, torch.device) and device.type == "cuda" and not getattr(run, "workers", None):
            self._gpu = _nvml_handle(device)
        self._stop.clear()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, args=(run,), name="bigmodel_nb-system", daemon=True)
        self._thread.start()

    def on_train_end(self, run, logs):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._sample(run)  # the last state, so even a short run has a sample

    def _loop(self, run) -> None:
        while not self._stop.wait(self.period):
            self._sample(run)

    def _sample(self, run) -> None:
        try:
            sample = {"time": round(time.perf_counter() - self._t0, 3),
                      "cpu_percent": self._process.cpu_percent(None), "rss_bytes": self._process.memory_info().rss}
            device = getattr(run, "device", None)
            if isinstance(device, torch.device) and device.type == "cuda":
                sample["torch_memory_bytes"] = torch.cuda.memory_allocated(device)
                sample.update(_nvml_sample(self._gpu))
        except Exception as exc:  # a sampler must never disturb training
            log.debug("system sample failed: %s", exc)
            return
        run.system.append(sample)
        run.emit("on_system", dict(sample))


def peak(samples: list[dict], key: str) -> float | None:
    """The largest value of `key` over `samples`, or None. Example: ``peak(run.system, "rss_bytes")``"""
    values = [s[key] for s in samples if s.get(key) is not None]
    return max(values) if values else None


def _nvml_handle(device: torch.device):
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
    except Exception:  # nvidia-ml-py missing, or no driver library: PyTorch's counters still come through
        return None


def _nvml_sample(handle) -> dict:
    if handle is None:
        return {}
    import pynvml

    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return {"gpu_util": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu, "gpu_memory_bytes": int(memory.used),
            "gpu_temperature": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)}
