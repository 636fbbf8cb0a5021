from types import SimpleNamespace

import pytest
import torch

from bigmodel_nb.engine.core import device as dev
from bigmodel_nb.engine.core.device import (
    AmpPolicy,
    DeviceInfo,
    default_device,
    detect_devices,
    resolve_amp,
    resolve_device,
    set_default_device,
)
from bigmodel_nb.engine.core.errors import BigModelError

GIB = 1 << 30
H100 = SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, total_memory=80 * GIB)
T4 = SimpleNamespace(name="Tesla T4", major=7, minor=5, total_memory=16 * GIB)


@pytest.fixture(autouse=True)
def restore_default():
    saved = dev._default
    dev._default = None  # each test starts from "auto", whatever an earlier test (e.g. %device cpu) chose
    yield
    dev._default = saved


@pytest.fixture
def no_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)


def fake_cuda(monkeypatch, gpus=(H100, T4), hip=None):
    """Pretend this machine has `gpus`, through the same torch.cuda calls a real one answers."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: gpus[i])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (gpus[i].total_memory // 2, gpus[i].total_memory))
    # is_bf16_supported() would say True for emulated bf16 (T4); the engine must not rely on it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)


# -- CPU (the real machine) ---------------------------------------------------------------------
def test_detect_devices_ends_with_the_cpu():
    devices = detect_devices()
    cpu = devices[-1]
    assert [d.kind for d in devices].count("cpu") == 1
    assert (cpu.name, cpu.kind) == ("cpu", "cpu")
    assert cpu.threads == torch.get_num_threads()
    assert cpu.precisions == ["fp32", "bf16"]
    assert cpu.label and isinstance(cpu.label, str)
    assert cpu.total_memory is None or cpu.total_memory > cpu.free_memory > 0


def test_cpu_banner_and_row():
    cpu = detect_devices()[-1]
    n = torch.get_num_threads()
    assert cpu.banner() == f"cpu · {n} thread{'s' if n != 1 else ''}"
    assert DeviceInfo("cpu", "cpu", "x", threads=1).banner() == "cpu · 1 thread"
    row = cpu.as_row()
    assert row["name"] == "cpu" and row["precisions"] == "fp32, bf16" and row["capability"] is None


def test_resolve_device_cpu_spellings(no_accelerators):
    for spec in ("cpu", " CPU ", "cpu:0", torch.device("cpu"), None, "auto"):
        assert resolve_device(spec) == torch.device("cpu")


def test_resolve_device_errors_when_cuda_or_mps_missing(no_accelerators):
    with pytest.raises(BigModelError, match=r"^CUDA is not available on this machine; use --device cpu or auto\.$"):
        resolve_device("cuda")
    with pytest.raises(BigModelError, match="CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(BigModelError, match=r"^Apple MPS is not available on this machine"):
        resolve_device("mps")


def test_resolve_device_unknown_names():
    with pytest.raises(BigModelError, match=r"^Unknown device 'tpu'; choose one of: auto, cpu, cuda, cuda:N, mps"):
        resolve_device("tpu")
    with pytest.raises(BigModelError, match=r"did you mean 'cuda'\?"):
        resolve_device("cdua")
    assert issubclass(BigModelError, ValueError)


def test_set_default_device_round_trip(no_accelerators):
    assert default_device() == torch.device("cpu")
    dev._default = torch.device("meta")  # stands in for "some other device was chosen"
    assert default_device() == torch.device("meta") == resolve_device("auto")
    assert set_default_device("cpu") == torch.device("cpu") == default_device()
    with pytest.raises(BigModelError):
        set_default_device("cuda:0")
    assert default_device() == torch.device("cpu")  # a failed call changes nothing
    set_default_device("auto")
    assert dev._default is None


def test_resolve_amp_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == AmpPolicy(None, False) and resolve_amp(None, "cpu").name == "off"
    assert resolve_amp("bf16", cpu) == AmpPolicy(torch.bfloat16, False)
    assert resolve_amp("BFloat16", cpu).name == "bf16"
    assert resolve_amp("off", cpu).name == resolve_amp("fp32", cpu).name == "off"
    with pytest.raises(BigModelError, match=r"^fp16 autocast is not supported on cpu; use --amp bf16 or off\.$"):
        resolve_amp("fp16", cpu)
    with pytest.raises(BigModelError, match=r"^Unknown --amp value 'bf61'.*did you mean 'bf16'"):
        resolve_amp("bf61", cpu)


# -- simulated CUDA ---------------------------------------------------------------------------
def test_fake_cuda_detection(monkeypatch):
    fake_cuda(monkeypatch)
    devices = detect_devices()
    assert [d.name for d in devices] == ["cuda:0", "cuda:1", "cpu"]
    h100, t4 = devices[:2]
    assert h100.kind == "cuda" and h100.label == "NVIDIA H100 80GB HBM3"
    assert (h100.total_memory, h100.free_memory, h100.capability) == (80 * GIB, 40 * GIB, (9, 0))
    assert h100.precisions == ["fp32", "bf16", "fp16"] and t4.precisions == ["fp32", "fp16"]
    assert h100.banner() == "cuda:0 NVIDIA H100 80GB HBM3 · bf16"
    assert t4.banner() == "cuda:1 Tesla T4 · fp16"
    assert h100.as_row()["capability"] == "9.0"


def test_fake_cuda_memory_fallback_and_broken_driver(monkeypatch):
    fake_cuda(monkeypatch, gpus=(H100,))

    def no_context(i):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_context)
    (gpu, cpu) = detect_devices()
    assert gpu.total_memory == 80 * GIB and gpu.free_memory is None

    monkeypatch.setattr(torch.cuda, "get_device_properties", no_context)
    assert [d.name for d in detect_devices()] == ["cpu"]  # never raises


def test_fake_rocm_label(monkeypatch):
    fake_cuda(monkeypatch, gpus=(SimpleNamespace(name="AMD Instinct MI300X", major=9, minor=4, total_memory=GIB),),
              hip="6.2")
    gpu = detect_devices()[0]
    assert gpu.kind == "cuda" and gpu.label == "AMD Instinct MI300X (ROCm)" and "bf16" in gpu.precisions


def test_fake_cuda_resolve_device(monkeypatch):
    fake_cuda(monkeypatch)
    assert default_device() == torch.device("cuda", 0) == resolve_device("auto") == resolve_device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1) == resolve_device(1)
    with pytest.raises(BigModelError, match=r"^cuda:3 does not exist; "
                                            r"this machine has 2 CUDA devices \(cuda:0, cuda:1\)\.$"):
        resolve_device("cuda:3")
    assert set_default_device("cuda:1") == torch.device("cuda", 1) == default_device()
    fake_cuda(monkeypatch, gpus=(H100,))
    with pytest.raises(BigModelError, match=r"^cuda:3 does not exist; this machine has 1 CUDA device \(cuda:0\)\.$"):
        resolve_device("cuda:3")


def test_fake_cuda_amp(monkeypatch):
    fake_cuda(monkeypatch)
    assert resolve_amp("auto", torch.device("cuda", 0)) == AmpPolicy(torch.bfloat16, False)
    t4 = torch.device("cuda", 1)
    fp16 = resolve_amp("auto", t4)
    assert fp16 == AmpPolicy(torch.float16, True) and fp16.name == "fp16"  # fp16 always with a GradScaler
    assert resolve_amp("fp16", torch.device("cuda", 0)).use_scaler
    with pytest.raises(BigModelError, match=r"^bf16 autocast is not supported on cuda:1 "
                                            r"\(Tesla T4, compute capability 7\.5\); use --amp fp16 or off\.$"):
        resolve_amp("bf16", t4)
    assert resolve_amp("off", t4).dtype is None


def test_fake_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    monkeypatch.setattr(dev, "_mps_precisions", lambda: ["fp32", "fp16"])
    devices = detect_devices()
    assert [d.name for d in devices] == ["mps", "cpu"] and devices[0].banner() == "mps Apple MPS · fp32"
    assert default_device() == torch.device("mps") == resolve_device("mps")
    mps = torch.device("mps")
    assert resolve_amp("auto", mps).name == "off"
    assert resolve_amp("fp16", mps) == AmpPolicy(torch.float16, True)
    with pytest.raises(BigModelError, match="needs macOS 14"):
        resolve_amp("bf16", mps)
