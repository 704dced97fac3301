import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
