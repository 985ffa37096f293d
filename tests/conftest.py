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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A simple_net trained 2 epochs on a tiny dataset, once per test module; returns
    (dataset, save_dir, the data/run flags to pass to evaluate.py)."""
    import pipeline
    from tests.datasets import TINY, make_dataset

    tmp = tmp_path_factory.mktemp("eval")
    dataset = make_dataset(tmp / "shop", num_items=12, per_item=4)
    save_dir = tmp / "models"
    common = ["--dataset", str(dataset), "--dataset_dir", str(tmp / "data"), "--save_dir", str(save_dir),
              *TINY]
    assert pipeline.main(["-m", "simple_net", "--epochs", "2", "--save_every", "1", *common]) == 0
    return dataset, save_dir, common
