"""A disk cache for numbers that depend only on fixed inputs (a model's weights, the MNIST files).

The classifier's statistics of the test set and of its references take ~20 s on a 2-core CPU and are the
same on every run until the classifier or the data change, so they are computed once and kept in
$MNISTGEN_CACHE (default: $XDG_CACHE_HOME/mnistgen, else ~/.cache/mnistgen), outside the repository.

An entry's file name is a SHA-256 of everything its value depends on (`key`), and the file repeats the key:
a changed classifier or data set, a new version of the code that computes the value, or another thread count
misses and recomputes. A cache is only ever a shortcut: an unreadable, truncated or foreign entry is recomputed and
rewritten, and a folder that cannot be written is skipped; neither is an error.
"""
import hashlib
import json
import os
from pathlib import Path

import torch

from mnistgen.errors import UserError
from mnistgen.files import atomic_torch_save

CACHE_ENV = "MNISTGEN_CACHE"


def cache_dir():
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mnistgen"


def tensor_digest(*tensors):
    """SHA-256 of tensors' dtypes, shapes and bytes: the identity of an input set, whatever made it."""
    digest = hashlib.sha256()
    for tensor in tensors:
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_digest(module):
    """SHA-256 of a module's parameters and buffers (names and `tensor_digest`s): the identity of a model
    whatever file or device it came from."""
    state = sorted(module.state_dict().items())
    return hashlib.sha256(" ".join(f"{name}:{tensor_digest(t)}" for name, t in state).encode()).hexdigest()


def entry_path(name, key):
    """The file of entry `name` for `key` (a JSON-able dict of everything the value depends on), to which the
    thread count is added: torch's reductions may round differently with another, and some values (an
    eigen-decomposition, 300 Langevin steps) carry those last bits far."""
    text = json.dumps(dict(key, torch_threads=torch.get_num_threads()), sort_keys=True)
    return cache_dir() / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:24]}.pt", text


def cached(name, key, compute):
    """compute()'s value (tensors, numbers, strings and containers of them), read from the cache when an
    entry for `key` is there and readable, else computed and stored."""
    path, key_text = entry_path(name, key)
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(entry, dict) and entry.get("key") == key_text and "value" in entry:
            return entry["value"]
    except Exception:  # missing, truncated, corrupt or from another version: recompute below
        pass
    value = compute()
    try:
        atomic_torch_save({"key": key_text, "value": value}, path)
    except (OSError, UserError):  # a read-only or full disk costs the next run the same time, nothing else
        pass
    return value
