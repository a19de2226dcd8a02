import os

import torch


def pytest_configure(config):
    # Each pytest-xdist worker gets one thread: two workers with torch's default thread pool each would
    # oversubscribe the cores, and OpenMP's spinning threads then slow every test down many times.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
