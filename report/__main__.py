"""The main job: `python -m report` evaluates every shipped model and prints one table.

The checkpoints are read from --models_dir (default: $MNISTGEN_MODELS, else models/ of the repository).
A model whose checkpoint is missing or broken is marked in the table and the others are still
evaluated (then a one-line error, exit code 2); nothing is faked.
"""
import argparse
import sys
import time
from pathlib import Path

if not __package__:  # run as a file: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.errors import UserError, run_cli
from mnistgen.paths import MODELS_DIR, MODELS_ENV
from mnistgen.utils import add_common_args, pick_device, seed_everything
from report.table import SECTIONS


def cell(spec, figures):
    return spec(figures) if callable(spec) else spec


def section_rows(section, device, data_root, models_dir):
    """[(figure, value, target)] of one section, or one row saying why it could not be evaluated."""
    path = Path(models_dir) / section.checkpoint
    if not path.is_file():
        return [("checkpoint", f"missing: {path}", "")], False
    seed_everything(0)  # every section is reproducible on its own
    try:
        figures = section.figures(section.load(path, device), device, data_root)
    except UserError as err:
        return [("BROKEN", str(err), "")], False
    rows = []
    for row in section.rows:
        label, value, target, *shown = row
        if not shown or shown[0](figures):
            rows.append((cell(label, figures), cell(value, figures), cell(target, figures)))
    return rows, True


def check_models_dir(folder, sections):
    """Fail in one line when `folder` holds none of the checkpoints of `sections` (a wrong or unset folder)."""
    names = [s.checkpoint for s in sections]
    if not any((Path(folder) / name).is_file() for name in names):
        raise UserError(f"no shipped models in {folder} (looked for {', '.join(names)}); set ${MODELS_ENV} to the "
                        "folder that holds them (models/ of the repository) or pass --models_dir DIR")


def print_table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    for i, row in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


@run_cli
def main(argv=None):
    parser = add_common_args(argparse.ArgumentParser(prog="python -m report", description=__doc__,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    names = [s.name for s in SECTIONS]
    parser.add_argument("--only", nargs="+", choices=names, metavar="MODEL",
                        help=f"evaluate only these models ({', '.join(names)}; default: all)")
    parser.add_argument("--models_dir", default=str(MODELS_DIR),
                        help=f"folder of the checkpoints (default: ${MODELS_ENV}, else models/ of the repository: "
                             f"{MODELS_DIR}); the samples are scored with the classifier of the default folder")
    args = parser.parse_args(argv)
    sections = [s for s in SECTIONS if not args.only or s.name in args.only]
    check_models_dir(args.models_dir, sections)
    device = pick_device(args.device)
    table, broken = [("model", "figure", "value", "target")], []
    for section in sections:
        print(f"evaluating {section.name} ({section.checkpoint}) ...", flush=True)
        start = time.time()
        rows, ok = section_rows(section, device, args.data_root, args.models_dir)
        print(f"evaluated {section.name} in {time.time() - start:.0f} s", flush=True)
        broken += [] if ok else [section.name]
        table += [(section.name if i == 0 else "", *row) for i, row in enumerate(rows)]
    print()
    print_table(table)
    if broken:
        raise UserError(f"could not evaluate {', '.join(broken)} (see the table)")


if __name__ == "__main__":
    main()
