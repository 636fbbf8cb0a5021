import time

import pytest


@pytest.fixture(scope="session")
def shell():
    """A real IPython InteractiveShell (terminal flavour), shared by the tests that need one."""
    from IPython.testing.globalipapp import start_ipython

    return start_ipython()


@pytest.fixture
def widget_mode(monkeypatch, shell):
    """Dashboards build their real widgets (no frontend is attached)."""
    monkeypatch.setenv("BIGMODEL_NB_UI", "widget")


@pytest.fixture
def mlp():
    """A factory of small seeded MLPs for digits."""
    import torch
    from torch import nn

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    return make


@pytest.fixture
def slow():
    """A callback that makes each step take a few ms, so control can be observed mid-run."""
    from bigmodel_nb.engine.core.callbacks import Callback

    class Slow(Callback):
        def on_step_end(self, run, logs):
            time.sleep(0.004)

    return Slow()


@pytest.fixture
def file_server():
    """Start a real HTTP server on 127.0.0.1 for a folder: ``base_url, requests, httpd = file_server(root)``.
    `requests` lists the paths asked for; tests stop it (httpd.shutdown()) to prove a cache works offline."""
    import functools
    import http.server
    import threading

    servers = []

    def start(root):
        requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", requests, httpd

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
