import os
from pathlib import Path

# Developers and CI keep MNIST in ../shared/data; use it when nothing else is configured.
_shared = Path(__file__).resolve().parents[2] / "shared" / "data"
if "MNIST_ROOT" not in os.environ and (_shared / "MNIST" / "raw").is_dir():
    os.environ["MNIST_ROOT"] = str(_shared)
