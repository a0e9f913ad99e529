"""What a non-Gaussian bottom half does to the split flow's three figures (issue 14's trade-off).

Takes the shipped split flow (`models/realnvp.pt`: conv flow on the top half, Gaussian p(bottom | top) in logit
space), inserts --bottom_couplings conv couplings of the bottom half given the top (`BottomCouplingLayer`, each
starting as the identity, so the start is the shipped model exactly), fine-tunes the whole flow for --steps
steps (Adam, cosine-decayed learning rate, batch 64; with --mode_weight the loss adds the squared error of the
conditional maximum, as `realnvp/train.py --mode-weight` does, and with --curvature_weight the excess curvature of
-log p(bottom | top) on the protocol's way to it, as `--curvature-weight` does), recomputes the batch-norm statistics and prints:
test bits/dim (10,000 test images), the classifier's scores of 1,000 samples at temperature 1.0 and 0.8, the
masked-half MSE of the conditional maximum (`mode_inpainting`) on the first 1,000 test images, and the inpainting
protocol (`run_inpainting`, seed 0) on the first --num_images training images with its wall time, next to the
conditional maximum's figure on the same images (they agree when the protocol's gradient ascent converges).

    python benchmarks/realnvp_bottom_flow.py --bottom_scale seen --bottom_hidden 32   # the README's first row, ~35 min
    python benchmarks/realnvp_bottom_flow.py --bottom_context 4 --bottom_hidden 16 --mode_weight 20
    python benchmarks/realnvp_bottom_flow.py --bottom_context 4 --bottom_hidden 8 --mode_weight 20 --curvature_weight 1
"""
import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.unconditional import sample_quality
from mnistgen.checkpoint import config_from_dict, load_checkpoint, save_checkpoint
from mnistgen.data import load_mnist
from mnistgen.files import ensure_writable
from mnistgen.utils import UserError, add_common_args, nonnegative_float, positive_int, run_cli, save_image_grid
from realnvp.realnvp import (CURVATURE_LIMIT, DEFAULT_PATH, KIND, RealNVPConfig, build, draw_samples, evaluate_bpd,
                             inpaint_mse, inpainting_loss, masked_inputs, mode_inpainting, preprocess, recompute_batchnorm,
                             run_inpainting)


def with_bottom_couplings(path, couplings, hidden, scale_from="top", context=14):
    """The split flow of `path` with `couplings` identity-initialised bottom couplings after its first two
    layers (the Gaussian stage and its batch norm); its other layers keep their weights."""
    payload = load_checkpoint(path, KIND)
    config = config_from_dict(RealNVPConfig, payload["config"], str(path))
    if config.arch != "split" or config.bottom_couplings:
        raise UserError(f"{path} is not a Gaussian split flow")
    config = dataclasses.replace(config, bottom_couplings=couplings, bottom_hidden=hidden, bottom_scale=scale_from,
                                 bottom_context=context)
    model = build(config)
    state = {}
    for key, value in payload["model"].items():
        index, _, rest = key.partition(".")
        if rest and index.isdigit() and int(index) >= 2:   # layers after the inserted ones move up
            key = f"{int(index) + 2 * couplings}.{rest}"
        state[key] = value.float()
    missing = model.load_state_dict(state, strict=False).missing_keys
    assert all(int(k.split(".")[0]) in range(2, 2 + 2 * couplings) for k in missing), missing
    return model, config


@run_cli
def main(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--load_path", default=str(DEFAULT_PATH), help="the split flow to extend (default: models/realnvp.pt)")
    p.add_argument("--bottom_couplings", type=positive_int, default=4, help="couplings inserted (default: 4)")
    p.add_argument("--bottom_hidden", type=positive_int, default=32, help="channels of their nets (default: 32)")
    p.add_argument("--bottom_scale", default="top", choices=["top", "seen"], help="what their scales read (default: top)")
    p.add_argument("--bottom_context", type=positive_int, default=14, help="top rows their nets see (default: 14)")
    p.add_argument("--mode_weight", type=nonnegative_float, default=0.0,
                   help="weight of the squared error of the conditional mode (bottom_mode) in pixels, summed over the "
                        "bottom half, added to the negative log-likelihood (default: 0)")
    p.add_argument("--curvature_weight", type=nonnegative_float, default=0.0,
                   help="weight of the squared excess of the ascent's curvature (ascent_curvature) over "
                        "--curvature_limit, at the conditional maximum and at a random point between it and the "
                        "protocol's noise start (default: 0)")
    p.add_argument("--curvature_limit", type=nonnegative_float, default=CURVATURE_LIMIT,
                   help="curvature allowed (the fixed step of 0.2 converges below 10) (default: %(default)s)")
    p.add_argument("--save", default=None, help="also save the fine-tuned flow to this checkpoint")
    p.add_argument("--steps", type=positive_int, default=1500, help="fine-tuning steps (default: 1500)")
    p.add_argument("--lr", type=nonnegative_float, default=5e-4, help="peak learning rate (default: 5e-4)")
    p.add_argument("--num_images", type=positive_int, default=100, help="images inpainted (default: 100)")
    p.add_argument("--figure", default=None, help="also write a grid of 100 samples at temperature 1 to this PNG")
    args = p.parse_args(argv)
    for path, flag in [(args.save, "--save"), (args.figure, "--figure")]:
        if path:
            ensure_writable(path, flag)
    torch.manual_seed(0)
    model, config = with_bottom_couplings(args.load_path, args.bottom_couplings, args.bottom_hidden, args.bottom_scale,
                                          args.bottom_context)
    train, test = (load_mnist(train=split, data_root=args.data_root)[0] for split in (True, False))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-6)
    gen = torch.Generator().manual_seed(5)
    order = torch.randperm(len(train), generator=gen)
    start = time.time()
    model.train()
    for step in range(args.steps):
        first = (step * 64) % (len(train) - 64)
        x, _ = preprocess(train[order[first:first + 64]], gen)
        for group in opt.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        log_probs, loss, terms = inpainting_loss(model, x, args.mode_weight, args.curvature_weight,
                                                 args.curvature_limit, gen)
        nll = -log_probs.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        if step % 250 == 0:
            print(f"step {step}: nll {nll.item() / 784:.4f} nats/dim, loss {loss.item() / 784:.4f}, "
                  f"{time.time() - start:.0f} s"
                  + (f", curvature excess {terms['curvature_excess']:.3g}" if args.curvature_weight else ""),
                  flush=True)
    print(f"fine-tuning: {(time.time() - start) / 60:.1f} min")
    recompute_batchnorm(model, train[:20000], generator=torch.Generator().manual_seed(0))
    if args.save:
        save_checkpoint(args.save, KIND, config, model=model.state_dict())
    print(f"test bits/dim: {evaluate_bpd(model, test):.4f}", flush=True)
    for temperature in (1.0, 0.8):
        samples = draw_samples(model, 1000, temperature)
        q = sample_quality(samples, "cpu", args.data_root)
        print(f"samples at temperature {temperature:g}: FID {q['fid']:.2f}, confidence {q['confidence']:.3f}, "
              f"classes {q['counts']}", flush=True)
        if args.figure and temperature == 1.0:
            save_image_grid(samples[:100], args.figure, nrow=10)
    test_raw = masked_inputs(test[:1000], torch.Generator().manual_seed(0))[0]
    print(f"conditional maximum, masked half, first 1,000 test images: "
          f"{inpaint_mse(mode_inpainting(model, test_raw), test_raw)['masked']:.4f}", flush=True)
    raw, corrupted, mask = masked_inputs(train[:args.num_images], torch.Generator().manual_seed(0))
    start = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        recovered = run_inpainting(model, corrupted, mask, scratch)
    print(f"inpainting, masked half, first {args.num_images} training images: "
          f"{inpaint_mse(recovered, raw)['masked']:.4f} ({time.time() - start:.0f} s); the maximum it climbs towards "
          f"scores {inpaint_mse(mode_inpainting(model, raw), raw)['masked']:.4f}")


if __name__ == "__main__":
    main()
