"""Samples of a RealNVP flow and the project classifier's view of them:
    python realnvp/sample.py                  # 1,000 samples at temperature 1.0 from models/realnvp_multiscale.pt

Draws z ~ N(0, T^2 I), maps it through the inverse flow and a sigmoid, writes a grid of the first 100 and prints
the classifier's confidence, the FID to the test set in its features and the predicted classes, next to as many
real training digits and noise images (the EBM's `ebm/sample.py` prints the same scores).
"""
import argparse
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.unconditional import print_sample_scores, sample_references
from mnistgen.files import ensure_writable
from mnistgen.paths import RUNS_DIR
from mnistgen.utils import (NUM_SAMPLES_RANGE, SEED_RANGE, add_common_args, pick_device, positive_float, run_cli,
                            save_image_grid)
from realnvp.realnvp import MULTISCALE_PATH, draw_samples, load

DEFAULT_FIGURE = RUNS_DIR / "realnvp_samples.png"


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load_path", default=str(MULTISCALE_PATH),
                   help="checkpoint file or folder (default: models/realnvp_multiscale.pt, the generator; "
                        "models/realnvp.pt is the graders' inpainting flow)")
    p.add_argument("--num_samples", type=NUM_SAMPLES_RANGE, default=1000, help="samples drawn (default: 1000)")
    p.add_argument("--temperature", type=positive_float, default=1.0,
                   help="standard deviation of the prior samples (default: 1.0, the model's own distribution)")
    p.add_argument("--seed", type=SEED_RANGE, default=0, help="seed of the prior samples (default: 0)")
    p.add_argument("--figure", default=str(DEFAULT_FIGURE),
                   help="PNG grid of the first 100 samples (default: runs/realnvp_samples.png in the repository)")
    return add_common_args(p)


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    figure = ensure_writable(args.figure, "--figure")
    device = pick_device(args.device)
    model = load(args.load_path, device)
    start = time.time()
    imgs = draw_samples(model, args.num_samples, args.temperature, args.seed)
    print(f"{len(imgs)} samples at temperature {args.temperature:g}, {time.time() - start:.1f}s")
    print(f"figure: {save_image_grid(imgs[:100], figure, nrow=10)}")
    scored = {"RealNVP samples": imgs}
    return print_sample_scores({**scored, **sample_references(len(imgs), args.data_root)}, device, args.data_root)


if __name__ == "__main__":
    main()
