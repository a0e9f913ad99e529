import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Developers and CI keep MNIST in ../shared/data; use it when nothing else is configured.
_shared = Path(__file__).resolve().parents[2] / "shared" / "data"
if "MNIST_ROOT" not in os.environ and (_shared / "MNIST" / "raw").is_dir():
    os.environ["MNIST_ROOT"] = str(_shared)


def run_script(args, cwd=None, timeout=300):
    """Run a repository script (`["vae/vae.py", "--eval", ...]` or `["-m", "report"]`) in a subprocess
    with one thread; returns the CompletedProcess (text output)."""
    script = args[0] if args[0] == "-m" else str(REPO_ROOT / args[0])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, script, *args[1:]], cwd=cwd or REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, contains=None):
    """Exit code 2, exactly one line on stderr starting with 'error:', no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], err[-2000:])
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1, err
    assert err.startswith("error:"), err
    if contains is not None:
        assert contains in err, err


@pytest.fixture
def script():
    return run_script
