"""The main job: `python -m report` evaluates every shipped model in models/ and prints one table.

A model whose checkpoint is missing or broken is marked in the table and the others are still
evaluated (then a one-line error, exit code 2); nothing is faked.
"""
import argparse
import sys
import time
from pathlib import Path

if not __package__:  # run as a file: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.utils import MODELS_DIR, UserError, add_common_args, pick_device, run_cli, seed_everything
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


def print_table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    for i, row in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


@run_cli
def main(argv=None):
    parser = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    names = [s.name for s in SECTIONS]
    parser.add_argument("--only", nargs="+", choices=names, metavar="MODEL",
                        help=f"evaluate only these models ({', '.join(names)}; default: all)")
    parser.add_argument("--models_dir", default=str(MODELS_DIR), help="folder of the checkpoints (default: models/)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    table, broken = [("model", "figure", "value", "target")], []
    for section in SECTIONS:
        if args.only and section.name not in args.only:
            continue
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
