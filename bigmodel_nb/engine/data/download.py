"""Downloads for the datasets that are not shipped: fetched once into a cache folder, atomically, with
one sentence (and where to put the file by hand) when there is no network.

    download_once(url, cache_dir() / "mnist" / "train-images-idx3-ubyte.gz", "MNIST")
"""
from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..core.errors import BigModelError

DOWNLOAD_TIMEOUT_S = 10.0


def cache_dir() -> Path:
    """Where downloads are kept: $BIGMODEL_NB_CACHE, else ~/.cache/bigmodel_nb.

    Example: ``cache_dir() / "tiny-shakespeare"``
    """
    return Path(os.environ.get("BIGMODEL_NB_CACHE") or Path.home() / ".cache" / "bigmodel_nb").expanduser()


def download_once(url: str, path: Path, what: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """`path`, downloading `url` into it first if it is not there yet (atomically: a partial
    download never looks finished). Example: ``download_once(TINY_SHAKESPEARE_URL, cache_dir() / "x.txt", "x")``
    """
    if path.is_file() and path.stat().st_size > 0:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
        if not payload:
            raise OSError("the server sent an empty file")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are all OSErrors
        reason = getattr(exc, "reason", None) or exc
        raise BigModelError(f"Could not download {what} from {url} ({reason}); check the network or put "
                            f"{path.name} in {path.parent}.") from None
    return path
