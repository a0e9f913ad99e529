"""Samples of a RealNVP flow and the project classifier's view of them:
    python realnvp/sample.py                      # 1,000 samples at temperature 1.0 from models/realnvp.pt

Draws z ~ N(0, T^2 I), maps it through the inverse flow and a sigmoid, writes a grid of the first 100 and prints
the classifier's confidence, the FID to the test set in its features and the predicted classes, next to as many
real training digits and noise images (the EBM's `ebm/sample.py` prints the same scores).

    python realnvp/sample.py --halves             # split flows: which half the samples' score comes from

--halves also scores images whose halves come from different places: test top halves with sampled bottom halves
(how well p(bottom | top) samples), sampled top halves with the bottom's maximum (`bottom_mode`; how well the
top-half flow samples), and test top halves with that maximum (the inpainting's answer).
"""
import argparse
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from classifier.unconditional import print_sample_scores, sample_references
from mnistgen.data import load_mnist
from mnistgen.files import ensure_writable
from mnistgen.utils import (UserError, add_common_args, pick_device, positive_float, positive_int, run_cli,
                            save_image_grid)
from realnvp.realnvp import DEFAULT_PATH, HALF, draw_samples, is_split, load, preprocess


@torch.no_grad()
def mixed_halves(model, images, temperature=1.0, seed=0):
    """{name: images (N, 1, 28, 28)} of a split flow: the top halves of `images` (N, 1, 28, 28) with sampled bottom
    halves (z_bottom ~ N(0, T^2)), sampled top halves with the bottom's maximum given them (z_bottom = 0), and the
    top halves of `images` with that maximum. The bottom half's latents are the last 392 of z (factored out)."""
    gen = torch.Generator().manual_seed(seed)
    device = model.prior_loc.device
    x, _ = preprocess(images, gen)
    z_data = model(x.to(device))[0]
    z_sample = torch.randn(z_data.shape, generator=gen).to(device) * temperature
    noise = torch.randn(len(x), x.size(1) - HALF, generator=gen).to(device) * temperature

    def image(z_top, z_bottom):
        return torch.sigmoid(model.sample(noise=torch.cat([z_top[:, :HALF], z_bottom], 1))).view(-1, 1, 28, 28).cpu()

    zeros = torch.zeros_like(noise)
    return {"test top + sampled bottom": image(z_data, noise),
            "sampled top + bottom maximum": image(z_sample, zeros),
            "test top + bottom maximum": image(z_data, zeros)}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load_path", default=str(DEFAULT_PATH), help="checkpoint file or folder (default: models/realnvp.pt)")
    p.add_argument("--num_samples", type=positive_int, default=1000, help="samples drawn (default: 1000)")
    p.add_argument("--temperature", type=positive_float, default=1.0,
                   help="standard deviation of the prior samples (default: 1.0, the model's own distribution)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples (default: 0)")
    p.add_argument("--halves", action="store_true",
                   help="split flows: also score samples whose top or bottom half is a test image's or the bottom's "
                        "maximum (see above)")
    p.add_argument("--figure", default="realnvp_samples.png",
                   help="PNG grid of the first 100 samples (default: realnvp_samples.png in the current folder)")
    return add_common_args(p)


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    figure = ensure_writable(args.figure, "--figure")
    device = pick_device(args.device)
    model = load(args.load_path, device)
    if args.halves and not is_split(model):
        raise UserError(f"--halves needs a split flow; {args.load_path} holds another architecture")
    start = time.time()
    imgs = draw_samples(model, args.num_samples, args.temperature, args.seed)
    print(f"{len(imgs)} samples at temperature {args.temperature:g}, {time.time() - start:.1f}s")
    print(f"figure: {save_image_grid(imgs[:100], figure, nrow=10)}")
    scored = {"RealNVP samples": imgs}
    if args.halves:
        test = load_mnist(train=False, data_root=args.data_root)[0][: args.num_samples]
        scored.update(mixed_halves(model, test, args.temperature, args.seed))
    return print_sample_scores({**scored, **sample_references(len(imgs), args.data_root)}, device, args.data_root)


if __name__ == "__main__":
    main()
