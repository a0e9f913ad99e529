"""Unconditional samples of the EBM: Langevin chains from draws of a Gaussian mixture fitted to the training
images (or, with --start noise, from smoothed U(0, 1) noise), a grid of the first 100, and the project
classifier's view of them (confidence, FID to the test set in its features, predicted classes) next to as many
draws of the chains' start, real training digits and noise images:
    python ebm/sample.py --num_samples 1000
"""
import argparse
import sys
import time
from pathlib import Path

import torch

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.unconditional import print_sample_scores, sample_references
from ebm.ebm import DEFAULT_PATH, EBMConfig, load
from ebm.protocol import SAMPLE_STEP_SIZE, SAMPLE_STEPS, START_KINDS, draw_samples, smoothed_noise, start_mixture
from mnistgen.files import ensure_writable
from mnistgen.paths import RUNS_DIR
from mnistgen.utils import (NUM_SAMPLES_RANGE, SEED_RANGE, add_common_args, pick_device, run_cli,
                            save_image_grid, shown)

FIGURE = RUNS_DIR / "ebm_samples.png"  # the grid's default place (git-ignored), wherever the command runs


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load_dir", default=str(DEFAULT_PATH),
                   help="checkpoint file, or a folder holding ebm.pt / shipped.pt / best.pt "
                        f"(default: {shown(DEFAULT_PATH)})")
    p.add_argument("--num_samples", type=NUM_SAMPLES_RANGE, default=1000, help="samples drawn (default: 1000)")
    p.add_argument("--sample_steps", type=EBMConfig.RANGES["inpaint_steps"], default=SAMPLE_STEPS,
                   help=f"Langevin steps per sample (default: {SAMPLE_STEPS})")
    p.add_argument("--step_size", type=EBMConfig.RANGES["langevin_lr"], default=SAMPLE_STEP_SIZE,
                   help=f"Langevin step size (default: {SAMPLE_STEP_SIZE:g})")
    p.add_argument("--start", default="mixture", choices=START_KINDS,
                   help="where the chains start: draws of a Gaussian mixture fitted to the training images "
                        "(default), or 3x3-smoothed U(0, 1) noise")
    p.add_argument("--start_figure", default=None,
                   help="also write a PNG grid of 100 draws of the chains' start (default: none)")
    p.add_argument("--seed", type=SEED_RANGE, default=42, help="seed of the chains and of the references (default: 42)")
    p.add_argument("--figure", default=str(FIGURE),
                   help=f"PNG grid of the first 100 samples (default: {shown(FIGURE)} in the repository)")
    return add_common_args(p)


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    figure = ensure_writable(args.figure, "--figure")
    start_figure = ensure_writable(args.start_figure, "--start_figure") if args.start_figure else None
    device = pick_device(args.device)
    trainer = load(args.load_dir, device)
    start = time.time()
    imgs = draw_samples(trainer, args.num_samples, args.sample_steps, args.seed, args.step_size, args.start,
                        args.data_root)
    print(f"{len(imgs)} samples, {args.sample_steps} Langevin steps of {args.step_size:g} from "
          f"{'the fitted mixture' if args.start == 'mixture' else 'smoothed noise'}, {time.time() - start:.1f}s")
    print(f"figure: {shown(save_image_grid(imgs[:100], figure, nrow=10))}")
    gen = torch.Generator().manual_seed(args.seed)
    starts = (start_mixture(args.data_root).sample(len(imgs), gen) if args.start == "mixture"
              else smoothed_noise(len(imgs), gen))
    if start_figure:
        print(f"chain starts: {shown(save_image_grid(starts[:100], start_figure, nrow=10))}")
    print_sample_scores({"EBM samples": imgs, "the chains' start alone": starts,
                         **sample_references(len(imgs), args.data_root, args.seed)}, device, args.data_root)
    return imgs


if __name__ == "__main__":
    main()
