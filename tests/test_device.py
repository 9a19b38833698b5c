"""Tests for the device package: the CPU path for real, NPU and CUDA through stand-ins."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

import device
from device import Backend, DeviceError, select_backend, unavailable_reason
from device.__main__ import main as device_main

ROOT = Path(__file__).resolve().parents[1]
UNKNOWN_HINT = "use one of auto, cpu, cuda[:N], npu[:N]"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Every test starts without ILRE_DEVICE and without a torch.npu namespace."""
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    monkeypatch.delattr(torch, "npu", raising=False)


@pytest.fixture
def no_npu(monkeypatch):
    """torch_npu cannot be imported (None in sys.modules makes `import` fail)."""
    monkeypatch.setitem(sys.modules, "torch_npu", None)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Two CUDA devices that answer calls but never hold tensors."""
    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: f"Fake GPU {i}")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(("sync", d)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 777)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda d=None: calls.append(("reset", d)))
    return calls


@pytest.fixture(scope="session")
def npu_device_type():
    """Make "npu" a torch device type, as importing the real torch_npu does.

    The rename cannot be undone, but it only gives the private-use backend a
    name; no tensor is ever put on it.
    """
    current = torch._C._get_privateuse1_backend_name()
    if current not in ("privateuseone", "npu"):
        pytest.skip(f"private-use backend already named {current!r}")
    torch.utils.rename_privateuse1_backend("npu")


@pytest.fixture
def fake_npu(monkeypatch, npu_device_type):
    """A stand-in torch_npu module and torch.npu namespace with four devices."""
    calls: list[tuple] = []
    module = types.ModuleType("torch_npu")
    module.__version__ = "9.9.9.fake"
    monkeypatch.setitem(sys.modules, "torch_npu", module)
    npu = types.SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: 4,
        get_device_name=lambda i=None: f"Ascend Fake {i}",
        synchronize=lambda d=None: calls.append(("sync", d)),
        max_memory_allocated=lambda d=None: 123_456,
        reset_peak_memory_stats=lambda d=None: calls.append(("reset", d)),
        calls=calls,
    )
    monkeypatch.setattr(torch, "npu", npu, raising=False)
    return npu


# --------------------------------------------------------------------------- cpu, for real


def test_cpu_backend_policy():
    b = select_backend("cpu")
    assert b.name == "cpu"
    assert b.torch_device == torch.device("cpu")
    assert b.dtype == torch.float32
    assert b.attn_implementation == "sdpa"
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.name = "cuda"  # type: ignore[misc]
    assert b == select_backend("cpu") and hash(b) == hash(select_backend("cpu"))


def test_cpu_timer_measures_sleep():
    b = select_backend("cpu")
    b.synchronize()  # no-op, must not raise
    with b.timer() as t:
        assert t.seconds != t.seconds  # NaN until the block exits
        time.sleep(0.05)
    assert 0.045 <= t.seconds < 1.0


def test_cpu_timer_sets_seconds_when_block_raises():
    b = select_backend("cpu")
    with pytest.raises(KeyError), b.timer() as t:
        raise KeyError("boom")
    assert 0.0 <= t.seconds < 1.0


def test_cpu_peak_memory_is_process_peak_rss():
    b = select_backend("cpu")
    peak = b.peak_memory_bytes()
    assert peak > 10 * 2**20  # a process that imported torch holds well over 10 MiB
    status = Path("/proc/self/status")
    if status.exists():  # Linux: ru_maxrss is VmHWM, reported in KiB
        hwm_kib = next(int(line.split()[1]) for line in status.read_text().splitlines()
                       if line.startswith("VmHWM:"))
        assert abs(b.peak_memory_bytes() - hwm_kib * 1024) < 64 * 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_cpu_reset_records_baseline_and_peak_rises_above_it():
    b = select_backend("cpu")
    b.reset_peak_memory()
    baseline = b.peak_memory_baseline_bytes()
    assert baseline == b.peak_memory_bytes() > 0
    resident = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    extra = max(baseline - resident, 0) + 64 * 2**20  # enough to pass the old peak
    block = torch.ones(extra // 4 + 1, dtype=torch.float32)  # ones() touches every page
    assert b.peak_memory_bytes() > baseline
    del block


def test_cpu_dtype_override():
    assert select_backend("cpu", dtype="bf16").dtype == torch.bfloat16
    assert select_backend("cpu", dtype=torch.float16).dtype == torch.float16


def test_auto_picks_cpu_without_npu_or_cuda(no_npu, no_cuda):
    assert unavailable_reason("npu") == "torch_npu not installed"
    assert "cuda" in unavailable_reason("cuda").lower()
    assert unavailable_reason("cpu") is None
    assert select_backend().name == "cpu"
    assert select_backend("auto").name == "cpu"
    assert select_backend(" AUTO ").name == "cpu"


def test_selection_is_logged(no_npu, no_cuda, caplog):
    with caplog.at_level(logging.INFO, logger="device.backend"):
        select_backend()
    assert any("float32" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- environment variable


def test_env_var_is_honoured(monkeypatch, no_npu, fake_cuda):
    assert select_backend().name == "cuda"  # auto would pick cuda here
    monkeypatch.setenv(device.ENV_VAR, "cpu")
    assert select_backend().name == "cpu"


def test_explicit_argument_overrides_env_var(monkeypatch, no_npu, fake_cuda):
    monkeypatch.setenv(device.ENV_VAR, "cpu")
    assert select_backend("cuda:1").torch_device == torch.device("cuda", 1)
    monkeypatch.setenv(device.ENV_VAR, "tpu")  # a bad env var is ignored when an argument is given
    assert select_backend("cpu").name == "cpu"


def test_bad_env_var_is_named_in_error(monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "tpu")
    with pytest.raises(DeviceError, match=r"ILRE_DEVICE 'tpu'") as err:
        select_backend()
    assert UNKNOWN_HINT in str(err.value)


def test_empty_env_var_means_auto(monkeypatch, no_npu, no_cuda):
    monkeypatch.setenv(device.ENV_VAR, "  ")
    assert select_backend().name == "cpu"


# --------------------------------------------------------------------------- unknown strings and dtypes


@pytest.mark.parametrize("spec", ["tpu", "gpu", "cpu:0", "auto:1", "cuda:-1", "npu0", "cuda:x", ""])
def test_unknown_device_strings(spec):
    if spec == "":  # empty means "not given", i.e. auto; it is not an error
        assert isinstance(select_backend(spec), Backend)
        return
    with pytest.raises(DeviceError) as err:
        select_backend(spec)
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert repr(spec) in message and UNKNOWN_HINT in message and "\n" not in message


@pytest.mark.parametrize("name,expected", [
    ("auto", torch.float32), (" Auto ", torch.float32), ("float32", torch.float32), ("fp32", torch.float32),
    ("bfloat16", torch.bfloat16), ("BF16", torch.bfloat16),
    ("float16", torch.float16), ("fp16", torch.float16), (torch.bfloat16, torch.bfloat16),
])
def test_dtype_names(name, expected):
    assert select_backend("cpu", dtype=name).dtype == expected


@pytest.mark.parametrize("bad", ["int8", "half", "float64x", torch.int64, torch.bool])
def test_unknown_dtype(bad):
    with pytest.raises(DeviceError, match="unknown dtype") as err:
        select_backend("cpu", dtype=bad)
    assert "bfloat16/bf16" in str(err.value)


# --------------------------------------------------------------------------- cuda through stand-ins


def test_cuda_auto_and_policy(no_npu, fake_cuda):
    b = select_backend()
    assert (b.name, b.torch_device, b.dtype) == ("cuda", torch.device("cuda", 0), torch.bfloat16)
    assert select_backend("cuda", dtype="fp32").dtype == torch.float32
    assert "Fake GPU 0" in b.describe() and "bfloat16" in b.describe()


def test_cuda_timer_and_memory_use_the_device(no_npu, fake_cuda):
    b = select_backend("cuda:1")
    with b.timer() as t:
        assert fake_cuda == [("sync", torch.device("cuda", 1))]
    assert fake_cuda == [("sync", torch.device("cuda", 1))] * 2 and t.seconds >= 0
    b.reset_peak_memory()
    assert fake_cuda[-1] == ("reset", torch.device("cuda", 1))
    assert b.peak_memory_bytes() == 777 and b.peak_memory_baseline_bytes() == 0


def test_cuda_index_out_of_range(no_npu, fake_cuda):
    with pytest.raises(DeviceError, match=r"'cuda:2' out of range: 2 cuda device\(s\)") as err:
        select_backend("cuda:2")
    assert "cuda:0 to cuda:1" in str(err.value) and "--device cpu" in str(err.value)


def test_cuda_requested_but_unavailable(no_npu, no_cuda):
    with pytest.raises(DeviceError) as err:
        select_backend("cuda")
    message = str(err.value)
    assert message.startswith("device 'cuda' requested but")
    assert "CUDA build of torch" in message and "--device cpu" in message and "\n" not in message


# --------------------------------------------------------------------------- npu through stand-ins


def test_npu_preferred_over_cuda(fake_npu, fake_cuda):
    b = select_backend()
    assert (b.name, b.torch_device, b.dtype) == ("npu", torch.device("npu", 0), torch.bfloat16)
    assert b.attn_implementation == "sdpa"


def test_npu_index_and_describe(fake_npu, no_cuda):
    b = select_backend("npu:3", dtype="float16")
    assert b.torch_device == torch.device("npu", 3) and b.dtype == torch.float16
    line = b.describe()
    assert "npu:3 (Ascend Fake 3)" in line and "float16" in line
    assert "torch_npu 9.9.9.fake" in line and "\n" not in line


def test_npu_timer_and_memory_use_the_device(fake_npu, no_cuda):
    b = select_backend("npu:2")
    dev = torch.device("npu", 2)
    with b.timer():
        pass
    b.reset_peak_memory()
    assert fake_npu.calls == [("sync", dev), ("sync", dev), ("reset", dev)]
    assert b.peak_memory_bytes() == 123_456


def test_npu_index_out_of_range(fake_npu):
    with pytest.raises(DeviceError, match=r"'npu:4' out of range: 4 npu device\(s\)"):
        select_backend("npu:4")


def test_npu_requested_but_not_installed(no_npu):
    with pytest.raises(DeviceError) as err:
        select_backend("npu")
    message = str(err.value)
    assert "torch_npu not installed" in message
    assert "install torch_npu matching your torch and CANN versions (pip install torch_npu)" in message
    assert "--device cpu" in message and "\n" not in message


def test_npu_installed_but_unavailable(fake_npu, fake_cuda, monkeypatch):
    monkeypatch.setattr(fake_npu, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"torch.npu.is_available\(\) is False"):
        select_backend("npu:0")
    assert select_backend().name == "cuda"  # auto falls through to the next kind


def test_npu_import_broken_falls_through(monkeypatch, no_cuda):
    class BrokenFinder:
        """Makes `import torch_npu` fail as it does when CANN libraries are missing."""

        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "torch_npu":
                raise OSError("libascendcl.so: cannot open shared object file")
            return None

    monkeypatch.delitem(sys.modules, "torch_npu", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenFinder(), *sys.meta_path])
    assert unavailable_reason("npu").startswith("torch_npu failed to import: OSError: libascendcl")
    assert select_backend().name == "cpu"
    with pytest.raises(DeviceError, match="torch_npu failed to import"):
        select_backend("npu")


def test_npu_module_without_namespace(monkeypatch, no_cuda):
    monkeypatch.setitem(sys.modules, "torch_npu", types.ModuleType("torch_npu"))
    assert unavailable_reason("npu") == "torch_npu imported but did not register torch.npu"


def test_unknown_kind_for_unavailable_reason():
    with pytest.raises(DeviceError, match="unknown device kind 'tpu'"):
        unavailable_reason("tpu")


# --------------------------------------------------------------------------- isolation and cli


def test_import_does_not_load_torch_npu_and_unregistered_type_is_reported():
    """In a fresh process: importing `device` leaves torch_npu alone, and a
    torch_npu that did not register the "npu" device type gives a clear error."""
    script = (
        "import sys, types, torch\n"
        "tried = []\n"
        "class Spy:\n"  # records every attempt, even one that fails for want of torch_npu
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        tried.append(name)\n"
        "sys.meta_path.insert(0, Spy())\n"
        "import device, device.backend, device.__main__\n"
        "assert 'torch_npu' not in tried, 'torch_npu imported at package import'\n"
        "device.unavailable_reason('npu')\n"
        "assert 'torch_npu' in tried, 'probe did not try torch_npu'\n"
        "sys.modules['torch_npu'] = types.ModuleType('torch_npu')\n"
        "torch.npu = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 1)\n"
        "try:\n"
        "    device.select_backend('npu')\n"
        "except device.DeviceError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(device.ENV_VAR, None)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch does not know the device type 'npu'" in out.stdout
    assert "pip install torch_npu" in out.stdout


def test_cli_reports_each_kind(no_npu, no_cuda, capsys):
    assert device_main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "npu   unavailable: torch_npu not installed"
    assert out[1].startswith("cuda  unavailable: ")
    assert out[2] == "cpu   available"
    assert out[3].startswith("chosen: cpu | ") and "float32" in out[3]


def test_cli_reports_errors(no_npu, capsys):
    assert device_main(["npu"]) == 1
    assert "error: device 'npu' requested but torch_npu not installed" in capsys.readouterr().err
