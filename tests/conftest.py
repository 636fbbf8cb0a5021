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


@pytest.fixture
def dict_items():
    """A torch Dataset class whose items are dicts, as Hugging Face-style code writes them."""
    import torch
    from torch.utils.data import Dataset

    class DictItems(Dataset):
        """A torch Dataset whose items are dicts, as Hugging Face-style code writes them."""

        def __init__(self, n=64):
            g = torch.Generator().manual_seed(1)
            self.ids, self.labels = torch.randint(0, 20, (n, 6), generator=g), torch.randint(0, 2, (n,), generator=g)

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "label": self.labels[i]}

    return DictItems


@pytest.fixture
def keyword_model():
    """A model class that takes keyword inputs and returns a dict, as Hugging Face models do."""
    from torch import nn

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = nn.EmbeddingBag(20, 8), nn.Linear(8, 2)

        def forward(self, input_ids, labels=None):
            logits = self.head(self.embed(input_ids))
            return {"logits": logits} if labels is None else {"logits": logits,
                                                              "loss": nn.functional.cross_entropy(logits, labels)}

    return Bag
