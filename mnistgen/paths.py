"""Where the project's files are, anchored to the repository (never to the working directory).

REPO_ROOT is the folder that holds the `mnistgen` package: the clone, for a clone or an editable install;
site-packages, for `pip install .`, which installs the code and not the checkpoints. The shipped models are
read from $MNISTGEN_MODELS when it is set, else from models/ of the repository; MNIST's lookup is in data.py.
"""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_ENV = "MNISTGEN_MODELS"
MODELS_DIR = Path(os.environ.get(MODELS_ENV) or REPO_ROOT / "models").expanduser().absolute()
FIGURES_DIR = REPO_ROOT / "figures"
RUNS_DIR = REPO_ROOT / "runs"
DATA_DIR = REPO_ROOT / "data"


def shown(path):
    """`path` as a message or a help text shows it: relative to the repository when inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)
