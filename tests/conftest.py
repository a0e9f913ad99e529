import contextlib
import importlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# pytest-xdist runs one worker per core: one thread each (torch would start one per core in every worker, and
# oversubscribed cores run many times slower)
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # and the scripts the tests start

# Developers and CI keep MNIST in ../shared/data; use it when nothing else is configured.
_shared = Path(__file__).resolve().parents[2] / "shared" / "data"
if "MNIST_ROOT" not in os.environ and (_shared / "MNIST" / "raw").is_dir():
    os.environ["MNIST_ROOT"] = str(_shared)


@contextlib.contextmanager
def working_dir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_script(args, cwd=None, timeout=300, isolated=False):
    """Run a repository script (`["vae/vae.py", "--eval", ...]` or `["-m", "report"]`) as its command line
    would, and return a CompletedProcess (exit code, stdout, stderr as text).

    By default in this process: the script's `main(argv)` with stdout/stderr captured, in `cwd`, exit code
    from SystemExit, so a bad-input case needs no new interpreter importing torch; an exception that
    escapes `main` (a traceback on the command line) fails the test as it is. isolated=True runs a real
    subprocess with one thread instead."""
    if isolated:
        script = args[1] if args[0] == "-m" else str(REPO_ROOT / args[0])
        command = ["-m", script] if args[0] == "-m" else [script]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
        return subprocess.run([sys.executable, *command, *args[2 if args[0] == "-m" else 1:]], cwd=cwd or REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout)
    module_name, argv = (args[1] + ".__main__", args[2:]) if args[0] == "-m" else \
        (args[0][:-3].replace("/", "."), args[1:])
    main = importlib.import_module(module_name).main
    out, err, code = io.StringIO(), io.StringIO(), 0
    with working_dir(cwd or REPO_ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc, contains=None):
    """Exit code 2, exactly one line on stderr starting with 'error:', no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], err[-2000:])
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1, err
    assert err.startswith("error:"), err
    if contains is not None:
        assert contains in err, err


def pytest_collection_modifyitems(items):
    """The shipped models' checks first, longest first: each takes tens of seconds on one core, so they start while
    the other worker runs the short tests, instead of one of them starting last."""
    items.sort(key=lambda item: item.path.name != "test_shipped.py")  # a stable sort: the file's own order


@pytest.fixture
def script():
    return run_script
