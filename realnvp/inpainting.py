"""The graders' inpainting protocol: `python realnvp/inpainting.py` (no arguments needed).

The first --num_images (100) training images, dequantized and rescaled to [0.0001, 0.9999] as in
training; their bottom half (the last 392 pixels) replaced by Bernoulli(0.5) values rescaled to
[0.0001, 0.9999]; img_sample.png (samples), img_raw.png, img_masked.png and, through the
skeleton's `model.inpainting` (1000 gradient-ascent steps on log p in logit space), img_001.png,
img_011.png, ... written into --savedir (inpainting_images/ at the repository root). Then the
MSE between recovery and raw images over the masked half and over all pixels, and the same for
the masked input. --split test runs the same protocol on test images; --baseline also prints the
nearest-neighbour baseline (the bottom half of the training image whose top half is closest,
never the image itself). It ends by saying where the pictures are. --estimate (split flow) skips the 1,000 steps
and scores the point they converge to, the maximum of the Gaussian log p(bottom | top) (`bottom_mode`), in one
pass.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.data import load_mnist
from mnistgen.files import atomic_write_text, ensure_writable, ensure_writable_dir
from mnistgen.paths import REPO_ROOT
from mnistgen.utils import (SEED_RANGE, UserError, add_common_args, pick_device, positive_int, run_cli, save_image_grid,
                            take_first)
from realnvp import DEFAULT_PATH, inpaint_mse, load, masked_inputs, nearest_neighbour, run_inpainting
from realnvp.realnvp import is_split, mode_inpainting


def build_parser():
    p = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--load_path", default=str(DEFAULT_PATH),
                   help="checkpoint file or folder (default: models/realnvp.pt)")
    p.add_argument("--seed", type=SEED_RANGE, default=0, help="seed of the dequantization and mask noise (default: 0)")
    p.add_argument("--num_images", type=positive_int, default=100, help="images to inpaint (default: 100)")
    p.add_argument("--split", default="train", choices=["train", "test"],
                   help="take the first images of this split (default: train, as the graders)")
    p.add_argument("--baseline", action="store_true", help="also print the nearest-neighbour baseline")
    p.add_argument("--estimate", action="store_true",
                   help="split flow: instead of the 1,000 gradient steps, score the maximum of log p(bottom | top) "
                        "they converge to (one pass; seconds for 1,000 images). No pictures")
    p.add_argument("--savedir", default=str(REPO_ROOT / "inpainting_images"),
                   help="picture folder (default: inpainting_images/ at the repository root)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--figure", default=None,
                   help="also write a raw / masked / recovered figure of the first 10 images to this PNG")
    return p


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    # (--estimate draws no pictures: no folder for them)
    savedir = None if args.estimate else ensure_writable_dir(args.savedir, "picture folder (--savedir)")
    for path, flag in [(args.json, "--json"), (args.figure, "--figure")]:
        if path:
            ensure_writable(path, flag)
    device = pick_device(args.device)
    model = load(args.load_path, device)   # eval mode, shipped batch-norm statistics
    if args.estimate and not is_split(model):
        raise UserError(f"--estimate needs a split flow; {args.load_path} holds another architecture")
    images = load_mnist(train=args.split == "train", data_root=args.data_root)[0]
    images = take_first(images, args.num_images, f"{args.split} images")
    # One generator for the protocol's noise, in the order of the original script, which seeded the
    # global one: dequantization, Bernoulli bottom halves, then the prior samples of img_sample.png.
    gen = torch.Generator().manual_seed(args.seed)
    raw, corrupted, mask = masked_inputs(images, gen)
    if args.estimate:
        return report(args, dict(split=args.split, num_images=args.num_images, seed=args.seed, estimate=True,
                                 recovery=inpaint_mse(mode_inpainting(model, raw), raw),
                                 masked_input=inpaint_mse(corrupted, raw)), raw)
    shown = min(100, args.num_images)
    with torch.no_grad():
        samples = torch.sigmoid(model.sample(noise=torch.randn(shown, model.num_inputs, generator=gen)))
    save_image_grid(samples.view(-1, 1, 28, 28), savedir / "img_sample.png")
    save_image_grid(raw[:shown].view(-1, 1, 28, 28), savedir / "img_raw.png")
    save_image_grid(corrupted[:shown].view(-1, 1, 28, 28), savedir / "img_masked.png")
    recovered = run_inpainting(model, corrupted, mask, savedir)
    result = report(args, dict(split=args.split, num_images=args.num_images, seed=args.seed,
                               recovery=inpaint_mse(recovered, raw), masked_input=inpaint_mse(corrupted, raw)), raw)
    print(f"pictures in {savedir.resolve()}: img_sample.png, img_raw.png, img_masked.png, "
          "img_001.png ... img_991.png (every 10 steps)")
    if args.figure:
        n = min(10, args.num_images)
        rows = torch.cat([raw[:n], corrupted[:n], recovered[:n]]).view(-1, 1, 28, 28)
        print(f"raw / masked / recovered rows in {save_image_grid(rows, args.figure, nrow=n)}")
    return result


def report(args, result, raw):
    """Print the figures (and the baseline's with --baseline), write --json; returns the result dict."""
    what = "conditional maximum (--estimate, one pass)" if result.get("estimate") else "recovery     "
    print(f"{args.num_images} {args.split} images, bottom half masked:")
    print(f"  {what} MSE masked half {result['recovery']['masked']:.4f}, all pixels {result['recovery']['all']:.4f}")
    print(f"  masked input  MSE masked half {result['masked_input']['masked']:.4f}, "
          f"all pixels {result['masked_input']['all']:.4f}")
    if args.baseline:
        train_images = load_mnist(train=True, data_root=args.data_root)[0]
        exclude = torch.arange(args.num_images) if args.split == "train" else None
        result["nearest_neighbour"] = inpaint_mse(nearest_neighbour(raw, train_images, exclude), raw)
        print(f"  nearest-neighbour baseline MSE masked half {result['nearest_neighbour']['masked']:.4f}, "
              f"all pixels {result['nearest_neighbour']['all']:.4f}")
    if args.json:
        print(f"figures in {atomic_write_text(args.json, json.dumps(result, indent=2))}")
    return result


if __name__ == "__main__":
    main()
