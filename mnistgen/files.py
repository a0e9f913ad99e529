"""Output files: checked before any work starts, written atomically.

Every file the project writes goes through `atomic_write` (a temporary file beside the target, then an
atomic rename), so a kill mid-write leaves the previous file intact; `remove_stale_tmp` deletes the
temporaries a `kill -9` can leave behind.
"""
import contextlib
import os
import tempfile
from pathlib import Path

import torch

from mnistgen.errors import UserError

TMP_SUFFIX = ".tmp"


def tmp_path_for(path):
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path to write; on success it replaces `path` atomically, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_torch_save(obj, path):
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)  # through a file object: the archive's inner name does not depend on the temporary's
    return Path(path)


def atomic_write_text(path, text):
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_tmp(folder):
    """Delete the temporaries of killed writes in `folder`: ours (`.NAME.PID.tmp` of a process that is gone)
    and the older checkpoints' `NAME.pt.tmp`. Other files ending in .tmp are not ours and stay."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for tmp in folder.glob(f"*{TMP_SUFFIX}"):
        name, pid = tmp.name[:-len(TMP_SUFFIX)], None
        if tmp.name.startswith(".") and name.rpartition(".")[2].isdigit():
            pid = int(name.rpartition(".")[2])
        elif not name.endswith(".pt"):
            continue
        if pid is None or (pid != os.getpid() and not _pid_alive(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def ensure_writable(path, what="output"):
    """Fail now, in one line, if `path` (a file to be written) cannot be written: before hours of work."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, a file path is needed")
    ensure_writable_dir(path.parent, what=f"folder of {what} {path}")
    return path


def ensure_writable_dir(folder, what="output folder"):
    """Create `folder` if needed and prove it is writable by creating a file in it (permission bits say
    nothing for root, and nothing about read-only file systems)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f"cannot write the {what} {folder} ({err.strerror or type(err).__name__})") from None
    remove_stale_tmp(folder)
    return folder

