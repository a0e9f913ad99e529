"""README figures and supporting numbers of a VAE checkpoint (a complete training run writes them itself):

    python vae/readme_figures.py --figures_dir figures [--load_path models/vae.pt] [--logdir runs/vae]

writes vae_grid.png (the 10x10 grid of `--eval`), vae_curves.png (training curves from --logdir/log.csv,
when present), vae_reconstructions.png (test digits, odd rows, above their reconstructions, even rows)
and vae_temperature.png (the samples of `--eval` at several temperatures) into --figures_dir, and
prints the accuracy / per-class FID of 10,000 samples at each temperature (the cost of shrinking the
latent inside `sample`).
"""
import argparse
import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.utils import SEED_RANGE, add_common_args, pick_device, run_cli
from vae.evaluate import TEMPERATURES, readme_figures
from vae.vae import DEFAULT_PATH, SEED


def temperature_list(text):
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text}") from None
    if not all(0 < t < float("inf") for t in values):
        raise argparse.ArgumentTypeError(f"temperatures must be finite numbers > 0, got {text}")
    return values


@run_cli
def main(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--load_path", default=str(DEFAULT_PATH), help="VAE checkpoint (default: models/vae.pt)")
    p.add_argument("--logdir", default="runs/vae", help="training run with log.csv (default: runs/vae)")
    p.add_argument("--figures_dir", default=".", help="where the PNGs go (default: the current folder)")
    p.add_argument("--seed", type=SEED_RANGE, default=SEED, help=f"seed of the samples, as --eval (default: {SEED})")
    p.add_argument("--temperatures", type=temperature_list, default=TEMPERATURES,
                   help=f"comma-separated sampling temperatures to compare "
                        f"(default: {','.join(map(str, TEMPERATURES))})")
    args = p.parse_args(argv)
    readme_figures(args.load_path, args.logdir, args.figures_dir, pick_device(args.device), args.data_root,
                   args.seed, args.temperatures)


if __name__ == "__main__":
    main()
