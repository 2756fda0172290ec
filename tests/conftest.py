import atexit
import os
import shutil
import tempfile

# The suite's own int8 calibration cache (and any other normapps cache): never the user's, and
# shared by the CLI subprocesses of one session so each encoder is calibrated once.
if "NORMAPPS_CACHE" not in os.environ:
    os.environ["NORMAPPS_CACHE"] = tempfile.mkdtemp(prefix="normapps-test-cache-")
    atexit.register(shutil.rmtree, os.environ["NORMAPPS_CACHE"], True)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one thread: on shared cores OpenMP's spinning threads make tiny ops 10-20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """task name -> a tiny checkpoint of that task in its real format (built once per session)."""
    from tests.tiny_checkpoints import build_all

    return build_all(tmp_path_factory.mktemp("tiny_checkpoints"))
