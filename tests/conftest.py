"""Shared test settings."""

import shutil

import pytest
import torch

# The tests use small tensors: one thread is as fast as two, and far faster when the two
# cores are shared with other processes (oversubscribed OpenMP threads spin).
torch.set_num_threads(1)


@pytest.fixture
def needs_a_compiler():
    """Skip a torch.compile test where the CPU backend has no C++ compiler to call."""
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler; none on PATH")


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on localhost, standing in for the repository's raw files."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # no request log on stderr
            pass

    root = tmp_path / "repository"
    root.mkdir()
    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
