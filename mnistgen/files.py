"""Output files: checked before any work starts, written atomically.

Every file the project writes goes through `atomic_write` (a temporary file beside the target, then an
atomic rename), so a kill mid-write leaves the previous file intact; `remove_stale_tmp` deletes the
temporaries a `kill -9` can leave behind. A write that fails (disk full, a file size limit) is a one-line
UserError naming the file, and the previous file stays. A path that is a symbolic link writes the link's
target, and the link stays: outputs pointed at shared storage through a link land there.
"""
import contextlib
import io
import os
import tempfile
from pathlib import Path

import torch

from mnistgen.errors import UserError

TMP_SUFFIX = ".tmp"


def tmp_path_for(path):
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def write_target(path):
    """The file a write to `path` replaces: the target of a symbolic link (followed to the end), else `path`."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def write_failure(path, err, outcome="it was not written; a previous file there is unchanged"):
    """The one-line UserError of a write to `path` that failed with the OSError `err`."""
    return UserError(f"could not write {path} ({err.strerror or type(err).__name__}); {outcome}")


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path to write; on success it replaces `path` (a link's target) atomically, on failure it is
    removed. An OSError while writing (disk full, file too large) becomes a one-line UserError naming `path`."""
    path = write_target(path)
    tmp = tmp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise write_failure(path, err) from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_torch_save(obj, path):
    # Serialised in memory first, then written by Python: torch's own writer reports a full disk as "unexpected
    # pos ...", Python's write as the OSError (errno) it is. The bytes are the same as a torch.save to the file.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path) as tmp:
        Path(tmp).write_bytes(buffer.getbuffer())
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
    ensure_writable_dir(write_target(path).parent, what=f"folder of {what} {path}")
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

