"""Shared test settings: headless matplotlib, and the local HTTP server fixture."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")


import contextlib  # noqa: E402  (kept below the environment setup above)

import pytest  # noqa: E402

from tests.http_server import serve  # noqa: E402


@pytest.fixture
def http_server():
    """Start local test HTTP servers: `server = http_server({"/f.zip": Route(body=...)})`.

    Each call returns a running `tests.http_server.LocalServer`; all are stopped after the test.
    """
    with contextlib.ExitStack() as stack:
        yield lambda routes: stack.enter_context(serve(routes))
