"""The main job: evaluate every shipped model in models/ and print one table of figures.

`python -m mnistgen.report` (add `--device cpu` to force the CPU). A model whose checkpoint is
not in models/ yet is listed as missing; nothing is faked.
"""
import argparse
import importlib
import time

from mnistgen.utils import MODELS_DIR, UserError, add_common_args, pick_device, run_cli, seed_everything

# (name, module with `report(device, data_root)`, shipped checkpoint)
MODELS = [
    ("classifier", "classifier.report", "classifier.pt"),
    ("VAE", "vae.vae", "vae.pt"),
    ("GAN", "gan.gan", "gan.pt"),
    ("EBM", "ebm.main", "ebm.pt"),
    ("RealNVP", "realnvp.evaluate", "realnvp.pt"),
]


def evaluate(name, module_name, checkpoint, device, data_root):
    if not (MODELS_DIR / checkpoint).is_file():
        return [("checkpoint", f"missing: models/{checkpoint}", "")]
    seed_everything(0)  # every row is reproducible on its own
    try:
        return importlib.import_module(module_name).report(device, data_root)
    except UserError as err:
        return [("error", str(err), "")]


def print_table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    for i, row in enumerate(rows):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print(line)


@run_cli
def main(argv=None):
    parser = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--only", nargs="+", choices=[m[0] for m in MODELS], help="evaluate only these models")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    table = [("model", "figure", "value", "target")]
    for name, module_name, checkpoint in MODELS:
        if args.only and name not in args.only:
            continue
        start = time.time()
        rows = evaluate(name, module_name, checkpoint, device, args.data_root)
        print(f"evaluated {name} in {time.time() - start:.0f} s", flush=True)
        table += [(name if i == 0 else "", *row) for i, row in enumerate(rows)]
    print()
    print_table(table)


if __name__ == "__main__":
    main()
