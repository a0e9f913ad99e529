"""Small helpers every script uses: devices, seeding, flags and their one-line errors, images, logs."""
import argparse
import csv
import dataclasses
import functools
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from mnistgen.errors import UserError, run_cli  # noqa: F401 (run_cli: the scripts import it from here)
from mnistgen.files import atomic_write, write_failure
from mnistgen.paths import MODELS_DIR, REPO_ROOT, shown  # noqa: F401 (the model packages import them from here)


def pick_device(name="auto"):
    """'auto' picks CUDA, then Apple MPS, then CPU; any other name is used as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but CUDA is not available on this machine")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for, but Apple MPS is not available on this machine")
    return torch.device(name)


def take_first(items, n, what):
    """The first `n` of `items` (all when n is None); one rule for every --num_images: more than there are is an error."""
    if n is None:
        return items
    if n > len(items):
        raise UserError(f"--num_images {n} exceeds the {len(items)} {what}")
    return items[:n]


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def program_name():
    """The command as it is typed, for usage lines and messages: `python -m report` for a module run with -m,
    else the script's path relative to the repository (`ebm/main.py`) from whatever folder it was started."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return "python -m " + spec.name.removesuffix(".__main__")
    return shown(sys.argv[0])


def flag_names(name, dashed_aliases=False):
    """`name` (spelled with underscores, the project's spelling) and, with dashed_aliases, its dashed alias."""
    dashed = "--" + name[2:].replace("_", "-")
    return (name, dashed) if dashed_aliases and dashed != name else (name,)


def _one_line_error(parser, message):
    """argparse's error, in the project's one-line form (its default adds the whole usage text)."""
    print(f"error: {message} (see {parser.prog} --help)", file=sys.stderr)
    sys.exit(2)


def one_line_errors(parser):
    """`parser` with the usage line's command as typed (unless the script set `prog`) and one-line errors."""
    if parser.prog == os.path.basename(sys.argv[0]):  # argparse's default: the file name without its folder
        parser.prog = program_name()
    parser.error = functools.partial(_one_line_error, parser)
    return parser


def add_common_args(parser, dashed_aliases=False):
    """The flags every script shares, and `one_line_errors`. dashed_aliases=True also accepts each flag
    spelled with dashes (--data-root), for a script whose own flags keep a skeleton's dashes."""
    one_line_errors(parser)
    parser.add_argument(*flag_names("--device", dashed_aliases), default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where to run: auto picks CUDA, then MPS, then CPU (default: auto)")
    parser.add_argument(*flag_names("--data_root", dashed_aliases), default=None,
                        help="folder holding MNIST/raw/ (default: $MNIST_ROOT, then data/ at the repository root; "
                             "downloaded there when missing)")
    return parser


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def nonnegative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def nonnegative_float(text):
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def probability(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}")
    return value


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a number may take, as one rule for its flag (a Range is an argparse `type`) and for the config
    field it fills (`check_ranges`, run when a config is built from flags or read from a checkpoint), so the two
    cannot disagree. The bounds keep a value from overflowing float32, allocating terabytes or running for days."""
    low: float
    high: float
    integer: bool = True
    low_open: bool = False   # (low, high] instead of [low, high]

    def describe(self):
        if self.integer:
            return f"an integer in [{self.low}, {self.high}]"
        if (self.low, self.high, self.low_open) == (0, 1, False):
            return "a probability in [0, 1]"
        return f"a number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def contains(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.integer and isinstance(value, float)):
            return False
        return (self.low < value if self.low_open else self.low <= value) and value <= self.high

    def check(self, name, value):
        """`value` of the config field `name` (each value of a tuple field); ValueError naming the field."""
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if not self.contains(v):
                raise ValueError(f"{name} must be {self.describe()}, got {v!r}")

    def parse(self, text):
        try:
            return int(text) if self.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text}") from None

    def __call__(self, text):
        value = self.parse(text)
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text}")
        return value

    def comma_list(self, text):
        """An argparse `type` for comma-separated values, each in this range: '16,48' -> (16, 48)."""
        values = tuple(self.parse(v) for v in text.split(","))
        if not all(self.contains(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected comma-separated values, each {self.describe()}, got {text}")
        return values


def check_ranges(config, ranges):
    """ValueError naming the first field of `config` outside its Range in `ranges` ({field: Range}); None passes
    (an Optional field left unset)."""
    for name, accepted in ranges.items():
        value = getattr(config, name)
        if value is not None:
            accepted.check(name, value)


# The ranges of the flags every model shares (a model's own fields keep theirs in its config class).
SEED_RANGE = Range(0, 2 ** 32 - 1)          # what numpy's and Python's seeding accept
LR_RANGE = Range(0, 1, integer=False, low_open=True)
BATCH_SIZE_RANGE = Range(1, 60000)           # MNIST's training set
EPOCHS_RANGE = Range(1, 10000)
NUM_SAMPLES_RANGE = Range(1, 60000)          # a sample set is scored next to as many real training digits


def save_image_grid(images, path, nrow=10):
    """Write images (N, 1, 28, 28) in [0, 1] as one PNG grid, `nrow` images per row."""
    from torchvision.utils import save_image  # torchvision is slow to import; only the scripts that draw need it
    with atomic_write(path) as tmp:
        save_image(images.detach().float().cpu().clamp(0, 1), tmp, nrow=nrow, padding=2, pad_value=1.0, format="png")
    return Path(path)


class CsvLog:
    """Append one row per call to a CSV file (header written once); `rows` re-reads it for plots."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **row):
        new = not self.path.exists() or self.path.stat().st_size == 0
        try:
            with open(self.path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    writer.writeheader()
                writer.writerow(row)
        except OSError as err:
            raise write_failure(self.path, err, "its last row may be incomplete") from None

    def rows(self):
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate(self, key, last):
        """Drop the rows whose `key` column exceeds `last` (after a rollback to step `last`)."""
        rows = self.rows()
        kept = [r for r in rows if float(r[key]) <= last]
        if len(kept) < len(rows):
            with atomic_write(self.path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(kept)


def plot_curves(rows, x_key, panels, path, title=None):
    """One PNG with a panel per entry of `panels` ({panel title: [column, ...]}), x = `x_key`."""
    import matplotlib  # heavy, and only the training runs draw curves
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not rows:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    xs = [float(r[x_key]) for r in rows]
    for ax, (name, keys) in zip(axes[0], panels.items()):
        for key in keys:
            ys = [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows]
            ax.plot(xs, ys, label=key)
        ax.set_title(name)
        ax.set_xlabel(x_key)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
