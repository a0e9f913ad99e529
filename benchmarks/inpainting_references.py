"""Reference completions for RealNVP's inpainting protocol (bottom half masked), no model involved.

For the protocol's images (`realnvp.masked_inputs`, seed 0) it prints the masked-half MSE of: the
nearest neighbour's bottom half (`inpainting.py --baseline`), and the average bottom half of the
k nearest training images (by top half; the image itself excluded on the train split), averaged in
pixel space and in logit space. The k-NN averages approximate the posterior mean, the completion
that minimises the MSE; a mode-seeking method that returns a sharp plausible digit pays about twice
that error, which is why the nearest-neighbour baseline is hard to beat by gradient ascent. The pixel-space means
are the `nearest_neighbour` and `knn20` rows of `python -m report.inpainting`.

    python benchmarks/inpainting_references.py [--split test --num_images 1000]
"""
import argparse
import sys
from pathlib import Path

import torch

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.data import load_mnist
from mnistgen.utils import add_common_args, positive_int, run_cli, take_first
from realnvp import inpaint_mse, masked_inputs
from realnvp.realnvp import HALF, HI, LO
from report.inpainters import neighbour_indices


@run_cli
def main(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--split", choices=["train", "test"], default="train", help="images to complete (default: train)")
    p.add_argument("--num_images", type=positive_int, default=100, help="first N images of the split (default: 100)")
    args = p.parse_args(argv)
    train = load_mnist(train=True, data_root=args.data_root)[0].reshape(60000, -1).float()
    images = take_first(load_mnist(train=args.split == "train", data_root=args.data_root)[0], args.num_images,
                        f"{args.split} images")
    raw, corrupted, mask = masked_inputs(images, torch.Generator().manual_seed(0))
    exclude = torch.arange(len(raw)) if args.split == "train" else None   # never the image itself
    nearest = neighbour_indices(corrupted, mask, train, 50, exclude)    # by the top half, nearest first
    print(f"{len(raw)} {args.split} images, masked-half MSE of reference completions:")
    for k in (1, 5, 20, 50):
        bottoms = train[nearest[:, :k]][:, :, HALF:]   # (N, k, 392)
        pixel_mean = bottoms.mean(1)
        logit_mean = torch.sigmoid(torch.logit(bottoms.clamp(LO, HI)).mean(1))
        mse = [inpaint_mse(torch.cat([raw[:, :HALF], pred], 1), raw)["masked"] for pred in (pixel_mean, logit_mean)]
        print(f"  {k:2d} nearest neighbours: pixel-space mean {mse[0]:.4f}, logit-space mean {mse[1]:.4f}")


if __name__ == "__main__":
    main()
