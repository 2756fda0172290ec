import os

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
