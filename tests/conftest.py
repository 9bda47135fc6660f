import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# torch.compile's cache in a folder of this run's own, set before torch is imported. Its keys do not hold
# ATEN_CPU_CAPABILITY, so kernels that `make test` compiled for AVX512 were reused by `make test-isa`'s AVX2 run
# (NaN outputs), and AVX2 kernels the other way round crashed the interpreter (an AMX Xeon, torch 2.14.1).
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ovdet-tests-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
sys.path.insert(0, str(Path(__file__).parent))

COCO128 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco128-val"


@pytest.fixture(scope="session", autouse=True)
def _ovdet_cache(tmp_path_factory):
    """ovdet's cache (exported graphs, measured runtime and kernel choices) in a temporary folder, never the
    user's: a test run neither reads a stale graph nor leaves one behind."""
    if "OVDET_CACHE" not in os.environ:
        os.environ["OVDET_CACHE"] = str(tmp_path_factory.mktemp("ovdet-cache"))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    from tiny_clip import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def coco128():
    if not (COCO128 / "instances.json").is_file():
        pytest.skip(f"real photos not found at {COCO128}")
    return COCO128


@pytest.fixture(autouse=True)
def _torch_settings_restored():
    """Process-wide torch settings a test (or the code it runs) may change are put back after it, so no
    test's answer depends on the tests run before it: threads, the quantised engine, the default dtype,
    grad mode."""
    import torch

    saved = (torch.get_num_threads(), torch.backends.quantized.engine, torch.get_default_dtype(),
             torch.is_grad_enabled())
    yield
    threads, engine, dtype, grad = saved
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = engine
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)


@pytest.fixture(autouse=True)
def _logging_restored():
    """Handlers and levels a test's code installs on loggers are taken off after it: `ovdet train` run in
    this process lets Hydra configure logging with handlers bound to that test's captured stdout/stderr,
    and a later test's log call then failed on the closed stream ("--- Logging error ---")."""
    import logging

    manager = logging.Logger.manager
    names = [None, *manager.loggerDict]
    saved = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).level) for name in names}
    yield
    for name, (handlers, level) in saved.items():  # loggers first made during the test keep what their library set
        logger = logging.getLogger(name)
        logger.handlers[:] = [h for h in logger.handlers if h in handlers or _is_pytest_handler(h)]
        logger.setLevel(level)


def _is_pytest_handler(handler) -> bool:
    return type(handler).__module__.startswith("_pytest")


@pytest.fixture
def seeded():
    """torch, numpy and random seeded alike before the test, whatever ran before it (unseeded randn inputs)."""
    import random

    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture
def one_thread():
    """Tiny tensors: more threads only contend for the shared cores (10x slower under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def perturbed_detector(tiny_clip_dir):
    """A detector on the tiny CLIP whose head is moved off its initialisation, so that a reload or an
    export that silently re-initialised it would differ."""
    import torch

    from ovdet.models.detector import Detector

    torch.manual_seed(0)
    det = Detector.from_clip(str(tiny_clip_dir), image_size=64)
    with torch.no_grad():
        for p in det.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return det.eval()
