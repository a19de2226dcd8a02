import os
import tempfile

import torch


def pytest_report_header(config):
    """Which kind of CPU ran the tests (the numerical tests run on AVX2 and AVX-512 machines alike)."""
    return f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"


def pytest_addoption(parser):
    parser.addoption(
        "--threads",
        type=int,
        default=None,
        help="torch's thread count in each test process (default: 1 per pytest-xdist worker, else torch's "
        "own); .ci/run runs the numerical tests with 2 as well, since the order of a parallel sum moves "
        "the rounding",
    )


def pytest_configure(config):
    # The tests never read or write the user's dispatch cache (headwise.backends.tuning): auto decides from
    # the static table unless a test measures into a folder of its own.
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="headwise-tests-cache-")
    # Nor do they measure on first use (the default for CPU bf16/fp16 and training calls): what auto picks
    # would then depend on timing. The tests of tuning switch it on in their own cache folder.
    os.environ["HEADWISE_TUNE"] = "0"
    # Each pytest-xdist worker gets one thread: two workers with torch's default thread pool each would
    # oversubscribe the cores, and OpenMP's spinning threads then slow every test down many times.
    threads = config.getoption("--threads")
    if threads is not None:
        torch.set_num_threads(threads)
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
