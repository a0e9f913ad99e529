"""Every checkpoint of the project goes through here.

A checkpoint is a dict: {'kind': model name, 'config': constructor settings, 'format': 1,
...state_dicts}. It is written atomically (temporary file, then rename) and read with
torch.load(weights_only=True): no pickled code is ever executed.
"""
import os
from pathlib import Path

import torch

from mnistgen.utils import UserError

FORMAT = 1


class CheckpointError(UserError):
    pass


def save_checkpoint(path, kind, config, **state):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"kind": kind, "config": dict(config), "format": FORMAT, **state}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-save leaves the previous checkpoint intact
    return path


def resolve_path(path, names=()):
    """A checkpoint file, or a folder holding one of `names` (first match)."""
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"no checkpoint in folder {path} (looked for {', '.join(names) or 'nothing'})")
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def load_checkpoint(path, kind, names=(), map_location="cpu"):
    """Load and check a checkpoint of `kind`; every failure is a one-line CheckpointError."""
    path = resolve_path(path, names)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or "kind" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of this project (no 'kind'/'config' entries)")
    if ckpt["kind"] != kind:
        raise CheckpointError(f"{path} holds a {ckpt['kind']} checkpoint, but a {kind} checkpoint is needed")
    return ckpt


def half_state(state_dict):
    """fp16 copy of a state_dict's floating tensors (for shipped checkpoints; loading casts back)."""
    return {k: v.half() if torch.is_floating_point(v) else v for k, v in state_dict.items()}


def load_state(module, state_dict, path="checkpoint"):
    """load_state_dict with a one-line error when the weights do not fit the rebuilt module."""
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: weights do not match the model ({str(err).splitlines()[0][:120]})") from None
    return module
