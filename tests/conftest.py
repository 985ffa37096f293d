"""Shared test settings: headless matplotlib, the local HTTP server, one torch thread, and the
finished training run several modules share."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")


import contextlib  # noqa: E402  (kept below the environment setup above)

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.http_server import serve  # noqa: E402
from tests.tiny_run import TinyRun, train_tiny_run  # noqa: E402


@pytest.fixture
def http_server():
    """Start local test HTTP servers: `server = http_server({"/f.zip": Route(body=...)})`.

    Each call returns a running `tests.http_server.LocalServer`; all are stopped after the test.
    """
    with contextlib.ExitStack() as stack:
        yield lambda routes: stack.enter_context(serve(routes))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module that trains: on a busy shared CPU, OpenMP threads waiting on
    each other make small backward passes many times slower than a single thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """A finished simple_net run (see tests/tiny_run.py), trained once per session; read-only."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The session's finished simple_net run: (dataset, save_dir, flags that find it)."""
    return tiny_run.dataset, tiny_run.save_dir, tiny_run.flags
