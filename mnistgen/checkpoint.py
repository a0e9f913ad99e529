"""Every checkpoint of the project goes through here, and so does the model contract.

A checkpoint is a dict: {'kind': model name, 'config': the model's config as a dict, 'format': 1,
...state_dicts}. It is written atomically and read with torch.load(weights_only=True): no pickled
code is ever executed.

The contract every model package follows: one config dataclass (the CLI fills it, the checkpoint
stores it, the loader rebuilds from it), `build(config)` and `load(path, device)`. `load_model` is
the shared half of every `load`: whatever is wrong with the file (unreadable, another model or format,
sparse or meta-device tensors, a config that does not describe a model or is out of its fields' ranges,
missing, misshapen, non-finite or integer-for-float weights) is one line, and the config is checked
before any model is built from it.
"""
import dataclasses
import errno
import math
import typing
import warnings
from pathlib import Path

import torch

from mnistgen.files import atomic_torch_save
from mnistgen.errors import UserError
from mnistgen.paths import MODELS_DIR, MODELS_ENV

FORMAT = 1


class CheckpointError(UserError):
    pass


def save_checkpoint(path, kind, config, **state):
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return atomic_torch_save({"kind": kind, "config": config, "format": FORMAT, **state}, path)


def resolve_path(path, names=()):
    """A checkpoint file, or a folder holding one of `names` (first match)."""
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"no checkpoint in folder {path} (looked for {', '.join(names) or 'nothing'})"
                              + _models_hint(path))
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}" + _models_hint(path.parent))
    return path


def _models_hint(folder):
    """How to point at the shipped models, when `folder` is their default folder (a wheel install has none)."""
    if Path(folder).absolute() != MODELS_DIR:
        return ""
    return f"; set ${MODELS_ENV} to the folder of the shipped checkpoints (models/ of the repository)"


def _load_failure(err):
    """Why torch.load failed, in a few words (its own messages run to paragraphs)."""
    text = str(err)
    if "Weights only load failed" in text or isinstance(err, getattr(torch.serialization, "pickle").UnpicklingError):
        return "not a torch checkpoint, or one holding pickled objects, which are never loaded"
    # a short file makes torch's zip reader seek before the file's start: EINVAL, a message naming no truncation
    seek_before_start = isinstance(err, OSError) and err.errno == errno.EINVAL
    if "zip archive" in text or "central directory" in text or isinstance(err, EOFError) or seek_before_start:
        return "the file is truncated or not a torch checkpoint"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first if len(first) <= 100 else first[:first.rfind(" ", 0, 100)] + " ..."


def tensor_problem(tensor):
    """Why `tensor` cannot be used as data, in a few words; None for a dense, finite tensor with data on the CPU.
    Sparse tensors and tensors on the meta device (shapes without data) load fine and fail later, in tracebacks."""
    if tensor.is_meta:
        return "is a tensor on the meta device (a shape without data)"
    if tensor.layout != torch.strided:
        return f"is a {str(tensor.layout).removeprefix('torch.')} tensor, only dense tensors are read"
    if tensor.device.type != "cpu":
        return f"is on the {tensor.device.type} device, not loaded onto the CPU"
    if (torch.is_floating_point(tensor) or tensor.is_complex()) and not torch.isfinite(tensor).all():
        return "holds NaN or infinite values"
    return None


def check_tensors(obj, where):
    """CheckpointError naming the first tensor in `obj` (nested dicts, lists, tuples) that `tensor_problem` refuses;
    `where` names `obj` (a file), entries are named by their keys: 'model.fc1.weight'."""
    stack = [("", obj)]
    while stack:
        name, value = stack.pop()
        if torch.is_tensor(value):
            problem = tensor_problem(value)
            if problem:
                raise CheckpointError(f"{where}: entry {name or 'the whole file'} {problem}")
        elif isinstance(value, dict):
            stack += [(f"{name}.{key}" if name else str(key), v) for key, v in value.items()]
        elif isinstance(value, (list, tuple)):
            stack += [(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return obj


def load_tensors(path, what="checkpoint"):
    """torch.load(weights_only=True) onto the CPU with one-line errors: an unreadable file, or (check_tensors) a
    tensor that is sparse, on the meta device or not finite. torch's warnings about odd files (old pickle
    protocols, zero-size storages) are dropped: what matters about such a file is this function's verdict."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable {what} ({_load_failure(err)})") from None
    return check_tensors(obj, path)


def load_checkpoint(path, kind, names=()):
    """Load and check a checkpoint of `kind` (its tensors on the CPU); every failure is a one-line CheckpointError."""
    path = resolve_path(path, names)
    ckpt = load_tensors(path)
    if not isinstance(ckpt, dict) or "kind" not in ckpt or not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{path} is not a checkpoint of this project (no 'kind'/'config' entries)")
    if ckpt["kind"] != kind:
        raise CheckpointError(f"{path} holds a checkpoint of the {ckpt['kind']} model, not of the {kind} model")
    if ckpt.get("format", FORMAT) != FORMAT:
        raise CheckpointError(f"{path} is in checkpoint format {ckpt['format']!r}; this code reads format {FORMAT}")
    return ckpt


# ---------------------------------------------------------------------------------------------- configs

def _type_ok(value, hint):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        return any(_type_ok(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple or hint is tuple:
        item = args[0] if args else typing.Any
        return isinstance(value, (tuple, list)) and all(_type_ok(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _type_name(hint):
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def config_from_dict(cls, data, source="checkpoint"):
    """The dataclass `cls` from a checkpoint's config dict, checked field by field (one-line errors)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CheckpointError(f"{source}: unknown config entries {unknown} for a {cls.__name__}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = sorted(set(required) - set(data))
    if missing:
        raise CheckpointError(f"{source}: config lacks {missing}")
    for key, value in data.items():
        if not _type_ok(value, hints[key]):
            raise CheckpointError(f"{source}: config entry {key}={value!r} is not a {_type_name(hints[key])}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: bad config ({err})") from None


# ---------------------------------------------------------------------------------------------- weights

def half_state(state_dict):
    """fp16 copy of a state_dict's floating tensors (for shipped checkpoints; loading casts back)."""
    return {k: v.half() if torch.is_floating_point(v) else v for k, v in state_dict.items()}


def _dtype_kind(tensor):
    if tensor.dtype == torch.bool:
        return "boolean"
    return "floating-point" if torch.is_floating_point(tensor) else "complex" if tensor.is_complex() else "integer"


def load_state(module, state_dict, path="checkpoint"):
    """load_state_dict with a one-line error naming the first tensor that does not fit."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: weights are not a state_dict")
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    for name, tensor in state_dict.items():
        if not torch.is_tensor(tensor) or tensor.shape != own[name].shape:
            shape = tuple(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__
            raise CheckpointError(f"{path}: weights do not match the model: tensor {name} has shape {shape}, "
                                  f"the model needs {tuple(own[name].shape)}")
        if _dtype_kind(tensor) != _dtype_kind(own[name]):
            # load_state_dict would cast silently: int64 weights become a model of whole numbers
            raise CheckpointError(f"{path}: weights do not match the model: tensor {name} is {tensor.dtype}, "
                                  f"the model needs {_dtype_kind(own[name])} values ({own[name].dtype})")
    module.load_state_dict(state_dict)
    return module


def check_finite(module, path="checkpoint"):
    """Refuse a model with NaN or infinite parameters or buffers: it would only print garbage."""
    for name, tensor in module.state_dict().items():
        if torch.is_floating_point(tensor) and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {name} holds NaN or infinite values; the model is broken")
    return module


def load_model(path, kind, config_cls, build, names=(), key="model", device="cpu"):
    """The shared half of every model's `load`: (model on `device` in eval mode, config, checkpoint).

    Reads the checkpoint of `kind`, rebuilds its config as `config_cls`, calls `build(config)` and loads
    the state_dict stored under `key`; every way this can fail is a one-line CheckpointError."""
    ckpt = load_checkpoint(path, kind, names)
    path = resolve_path(path, names)
    config = config_from_dict(config_cls, ckpt["config"], str(path))
    try:
        model = build(config)
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: its config does not describe a {kind} model ({err})") from None
    if key not in ckpt:
        raise CheckpointError(f"{path} has no '{key}' weights")
    load_state(model, ckpt[key], path)
    check_finite(model.float(), path)
    return model.to(device).eval(), config, ckpt
