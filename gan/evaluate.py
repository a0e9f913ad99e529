"""The GAN's evaluation: `--eval` of gan/gan.py (samples file, grid, scores) and `figures` (the main job's numbers).

    python gan/evaluate.py [--load_path models/gan.pt]   # the same as `python gan/gan.py --eval [flags]`
"""
import copy
import sys
from pathlib import Path

if __name__ == "__main__":
    # run as a script: main() of the module gan.evaluate, which the package gan imports too, so that this file
    # runs once and its functions exist once (as in gan/gan.py)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's packages, without installing
    import gan.evaluate
    gan.evaluate.main()
    sys.exit()

import torch
import torch.nn as nn

from classifier.model import DEFAULT_PATH as CLASSIFIER_PATH
from classifier.model import format_score, get_scorer, reference_scores
from gan.gan import DEFAULT_PATH, GRID_FILE, SAMPLES_FILE, SEED, add_eval_args, generate_samples, load, new_parser
from mnistgen.files import atomic_torch_save, ensure_writable
from mnistgen.utils import pick_device, run_cli, save_image_grid


# ---------------------------------------------------------------- sampling and scoring
@torch.no_grad()
def recalibrate_bn(generator, device, n_batches=20, batch_size=1000, seed=0):
    """Recompute the generator's BN running statistics as exact averages over fresh batches of
    balanced labels (train-mode forward passes), so eval-mode sampling matches train-mode sampling."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    bns = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = plain mean over the batches below
    generator.train()
    eye = torch.eye(generator.label_dim, device=device)
    for _ in range(n_batches):
        z = torch.randn(batch_size, generator.latent_dim, generator=g).to(device)
        generator(z, eye.repeat(batch_size // generator.label_dim + 1, 1)[:batch_size])
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    return generator.eval()


def seeded_samples(generator, seed, device, n_per_class=1000):
    """`generate_samples` with the global RNG seeded by `seed`: the starter's function draws z from the
    global generator, so this is how --eval and `figures` make their samples reproducible. The caller's
    RNG state is restored afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return generate_samples(generator, n_per_class, device)


def fixed_eval_samples(generator, n_per_class, device, seed=1234):
    """Eval-mode samples from fixed latents (so epochs are compared on the same z), classes 0..9 cycling."""
    generator.eval()
    z = torch.randn(10 * n_per_class, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    label = torch.eye(generator.label_dim).repeat(n_per_class, 1)
    imgs = torch.cat([generator.sample(zb.to(device), lb.to(device)).cpu()
                      for zb, lb in zip(z.split(1000), label.split(1000))])
    return imgs, label.argmax(1)


def untruncated_score(generator, scorer, device, seed):
    """Scores of 10,000 eval-mode samples with z unscaled (truncation 1), the generator left as it was."""
    truncation, generator.truncation = generator.truncation, 1.0
    try:
        return scorer.score(*fixed_eval_samples(generator, 1000, device, seed=seed))
    finally:
        generator.truncation = truncation


@torch.no_grad()
def train_mode_samples(generator, n_per_class, device, seed):
    """Samples with batch-norm batch statistics (a copy of the generator, so its buffers stay intact)."""
    g = copy.deepcopy(generator).train()
    z = torch.randn(10 * n_per_class, g.latent_dim, generator=torch.Generator().manual_seed(seed + 1)) * g.truncation
    label = torch.eye(g.label_dim).repeat(n_per_class, 1)
    imgs = torch.cat([((g(zb.to(device), lb.to(device)) + 1) / 2).clamp(0, 1).cpu()
                      for zb, lb in zip(z.split(1000), label.split(1000))])
    return imgs, label.argmax(1)


def classifier_shipped():
    """Whether models/classifier.pt, which scores the samples, is there."""
    return CLASSIFIER_PATH.is_file()


def figures(generator, device, data_root=None):
    """The main job's numbers of a generator: the classifier's scores of 10,000 `generate_samples` images
    (seed 42), the same generator without truncation, and the per-class FID of the two references."""
    samples = seeded_samples(generator, SEED, device)
    scorer = get_scorer(device, data_root)
    score = scorer.score(samples["imgs"], samples["labels"])
    refs = reference_scores(scorer, data_root)
    weakest = min(score["per_class_accuracy"].items(), key=lambda kv: kv[1])
    untruncated = untruncated_score(generator, scorer, device, seed=SEED)
    return dict(truncation=generator.truncation, accuracy=score["accuracy"], fid=score["fid"],
                class_fid=score["class_fid"], per_class_accuracy=score["per_class_accuracy"],
                weakest_class=weakest[0], weakest_class_accuracy=weakest[1],
                untruncated_accuracy=untruncated["accuracy"], untruncated_class_fid=untruncated["class_fid"],
                floor_class_fid=refs["real"]["class_fid"], collapsed_class_fid=refs["collapsed"]["class_fid"])


# ---------------------------------------------------------------- --eval
@run_cli
def main(argv=None):
    args = add_eval_args(new_parser(__doc__)).parse_args(argv)
    return evaluate(args, pick_device(args.device))


def evaluate(args, device):
    """The assignment's --eval: gan_generated_samples.pt (1,000 per class, seed --seed) and its grid, then scores."""
    samples_path = ensure_writable(SAMPLES_FILE, "samples file (current folder)")
    grid_path = ensure_writable(args.grid_path or GRID_FILE, "grid (--grid_path)")
    g = load(args.load_path or DEFAULT_PATH, device)
    if args.truncation is not None:
        g.truncation = args.truncation
    samples = seeded_samples(g, args.seed, device)
    atomic_torch_save(samples, samples_path)
    print(f"wrote {SAMPLES_FILE} ({len(samples['imgs'])} images, 1,000 per class)")
    print(f"wrote {save_image_grid(samples['imgs'][:100], grid_path)} (10x10, column = class)")
    if not classifier_shipped():
        print("models/classifier.pt not found: no scores", file=sys.stderr)
        return None
    scorer = get_scorer(device, args.data_root)
    score = scorer.score(samples["imgs"], samples["labels"])
    print("generated (eval mode)\n  " + format_score(score))
    print("  per-class FID: " + " ".join(f"{c}:{v:.2f}" for c, v in score["per_class_fid"].items()))
    print("same generator in train mode (batch statistics, batches of 1,000)\n  " +
          format_score(scorer.score(*train_mode_samples(g, 1000, device, args.seed))))
    if g.truncation != 1.0:
        print(f"same generator without truncation (z not scaled by {g.truncation})\n  " +
              format_score(untruncated_score(g, scorer, device, args.seed)))
    refs = reference_scores(scorer, args.data_root)
    print("reference: 10,000 real training images\n  " + format_score(refs["real"]))
    print("reference: collapsed (10 test images per class, each x100)\n  " + format_score(refs["collapsed"]))
    print(f"per-class FID / real floor = {score['class_fid'] / refs['real']['class_fid']:.2f}")
    return score
