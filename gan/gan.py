"""Class-conditional GAN on MNIST (Problem 4): the starter's fixed MLP generator and discriminator,
their losses and the command line; training (`gan/train.py`, through the shared scaffold) and evaluation
(`gan/evaluate.py`: `--eval` and `figures`) import this file.

Train:     python gan/gan.py                      (defaults = the shipped model; a complete run writes models/gan.pt)
Evaluate:  python gan/gan.py --eval --load_path models/gan.pt
           (writes gan_generated_samples.pt, 1,000 samples per class, and its 10x10 grid gan_generated_samples.png
           in the current folder; prints the classifier's accuracy and per-class FID)

Training tricks (none touches the layers or their initialisation): non-saturating generator loss,
one-sided label smoothing, an exponential moving average (EMA) of the generator's weights, a linear
learning-rate decay at the end, and batch-norm running statistics recomputed for the EMA weights
(`generate_samples` puts the generator in eval mode, so these statistics are what it samples with).
"""
import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Tuple

if __name__ == "__main__":
    # `python gan/gan.py` runs this file as __main__, and train.py / evaluate.py import it as gan.gan: the file
    # would run twice and every class exist twice. So the script runs main() of gan.gan and stops here.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's packages, without installing
    import gan.gan
    gan.gan.main()
    sys.exit()

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mnistgen.checkpoint import load_model
from mnistgen.training import add_run_args
from mnistgen.utils import (BATCH_SIZE_RANGE, EPOCHS_RANGE, LR_RANGE, MODELS_DIR, SEED_RANGE, Range, UserError,
                            add_common_args, check_ranges, pick_device, probability, run_cli)

KIND = "gan"
DEFAULT_PATH = MODELS_DIR / "gan.pt"
SEED = 42  # the starter's --seed: the samples of --eval and of the main job
SAMPLES_FILE = "gan_generated_samples.pt"  # the assignment's output of --eval, in the current folder
GRID_FILE = "gan_generated_samples.png"    # --eval's 10x10 grid of those samples, beside them
# the starter's sizes: Generator(latent_dim=100, label_dim=10, img_dim=(1, 28, 28)), hidden_size 256
LATENT_DIM, LABEL_DIM, IMG_DIM, HIDDEN_SIZE = 100, 10, (1, 28, 28), 256
BETAS = (0.5, 0.999)  # the starter's Adam betas, both nets


def _init_normal(module, mean=0.0, std=0.02):
    """The starter's initialisation: every Linear weight ~ N(0, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean, std)
            nn.init.zeros_(m.bias)


# homework: the generator, its forward pass and `sample` (layers and initialisation fixed by the starter)
class Generator(nn.Module):
    """G(z, y): z -> fc 256 -> BN -> ReLU; y -> fc 256 -> BN -> ReLU; concat (512) -> fc 512 -> BN -> ReLU
    -> fc 1024 -> BN -> ReLU -> fc 784 -> tanh, reshaped to img_dim. Layer names follow the starter so
    its `checkpoint['g']` loads into the starter's class."""

    def __init__(self, latent_dim, label_dim, img_dim, hidden_size=256):
        super().__init__()
        self.latent_dim, self.label_dim, self.hidden_size = latent_dim, label_dim, hidden_size
        self.img_dim = tuple(img_dim) if isinstance(img_dim, (tuple, list)) else (int(img_dim),)
        h = hidden_size
        self.latent_fc, self.latent_bn = nn.Linear(latent_dim, h), nn.BatchNorm1d(h)
        self.label_fc, self.label_bn = nn.Linear(label_dim, h), nn.BatchNorm1d(h)
        self.fc1, self.bn1 = nn.Linear(2 * h, 2 * h), nn.BatchNorm1d(2 * h)
        self.fc2, self.bn2 = nn.Linear(2 * h, 4 * h), nn.BatchNorm1d(4 * h)
        self.fc3 = nn.Linear(4 * h, int(np.prod(self.img_dim)))
        _init_normal(self)
        # Sampling truncation (BigGAN's "truncation trick" in its simplest form): `sample` scales z by
        # this factor, trading a little diversity for cleaner digits. A plain attribute, not a buffer,
        # so 'g' keeps exactly the starter's state_dict keys; checkpoints store it in their config.
        self.truncation = 1.0

    def forward(self, z, label):
        """z (B, latent_dim), one-hot label (B, label_dim) -> images (B, *img_dim) in [-1, 1]."""
        z = F.relu(self.latent_bn(self.latent_fc(z)))
        y = F.relu(self.label_bn(self.label_fc(label)))
        out = F.relu(self.bn1(self.fc1(torch.cat([z, y], dim=-1))))
        out = F.relu(self.bn2(self.fc2(out)))
        return torch.tanh(self.fc3(out)).reshape((-1,) + self.img_dim)

    def sample(self, z, label):
        """Images (B, C, H, W) in [0, 1] for latents z (B, latent_dim) and one-hot labels (B, label_dim);
        z is scaled by `self.truncation` first."""
        with torch.no_grad():
            return ((self.forward(z * self.truncation, label) + 1) / 2).clamp_(0, 1)


# homework: the discriminator (layers and initialisation fixed by the starter)
class Discriminator(nn.Module):
    """D(x, y) in (0, 1): x -> fc 1024 -> LeakyReLU(0.2); y -> fc 1024 -> LeakyReLU(0.2); concat (2048)
    -> fc 512 -> BN -> LeakyReLU(0.2) -> fc 256 -> BN -> LeakyReLU(0.2) -> fc 1 -> sigmoid, squeezed."""

    def __init__(self, label_dim, img_dim, hidden_size=256):
        super().__init__()
        self.label_dim, self.hidden_size = label_dim, hidden_size
        self.img_dim = tuple(img_dim) if isinstance(img_dim, (tuple, list)) else (int(img_dim),)
        h = hidden_size
        self.img_fc = nn.Linear(int(np.prod(self.img_dim)), 4 * h)
        self.label_fc = nn.Linear(label_dim, 4 * h)
        self.fc2, self.bn2 = nn.Linear(8 * h, 2 * h), nn.BatchNorm1d(2 * h)
        self.fc3, self.bn3 = nn.Linear(2 * h, h), nn.BatchNorm1d(h)
        self.fc4 = nn.Linear(h, 1)
        _init_normal(self)

    def forward(self, img, label):
        """img (B, ...) in [-1, 1], one-hot label (B, label_dim) -> D(x, y) (B,)."""
        x = F.leaky_relu(self.img_fc(torch.flatten(img, start_dim=1)), 0.2)
        y = F.leaky_relu(self.label_fc(label), 0.2)
        x = F.leaky_relu(self.bn2(self.fc2(torch.cat([x, y], dim=-1))), 0.2)
        x = F.leaky_relu(self.bn3(self.fc3(x)), 0.2)
        return torch.sigmoid(self.fc4(x)).squeeze(dim=-1)


#########################
####  DO NOT MODIFY  ####
def generate_samples(generator, n_samples_per_class, device):
    generator.eval()
    latent = torch.randn((n_samples_per_class * 10, generator.latent_dim), device=device)
    label = torch.eye(generator.label_dim, dtype=torch.float, device=device).repeat(n_samples_per_class, 1)
    imgs = generator.sample(latent, label).cpu()
    label = torch.argmax(label, dim=-1).cpu()
    samples = dict(imgs=imgs, labels=label)
    return samples
##########################


@dataclasses.dataclass
class GANConfig:
    """The constructor arguments of Generator and Discriminator (the starter's, without defaults: a checkpoint
    must say what it holds) and the sampling truncation. Stored in every checkpoint; `load` rebuilds from it."""
    latent_dim: int
    label_dim: int
    img_dim: Tuple[int, ...]
    hidden_size: int
    truncation: float = 0.8  # scale of z in Generator.sample (see there and gan/README.md)

    # The values each field accepts, for a checkpoint's config and for the flag of the same name alike (sizes
    # bounded so that a config cannot ask for terabytes before the first error; truncation 0 would draw one
    # image per class, a huge one images of overflowed features).
    RANGES = dict(latent_dim=Range(1, 4096), label_dim=Range(1, 100), img_dim=Range(1, 64),
                  hidden_size=Range(1, 2048), truncation=Range(0, 10, integer=False, low_open=True))

    def __post_init__(self):
        check_ranges(self, self.RANGES)


def build(config):
    """A freshly initialised generator of `config` (its truncation set)."""
    g = Generator(config.latent_dim, config.label_dim, config.img_dim, config.hidden_size)
    g.truncation = config.truncation
    return g


def build_discriminator(config):
    return Discriminator(config.label_dim, config.img_dim, config.hidden_size)


def load(path=DEFAULT_PATH, device="cpu"):
    """The generator of a gan checkpoint (a file, or a folder holding gan.pt or best.pt), in eval mode."""
    return load_model(path, KIND, GANConfig, build, names=("gan.pt", "best.pt"), key="g", device=device)[0]


# ---------------------------------------------------------------- losses
# homework: the losses (the training step that uses them is gan/train.py)
def _bce(p, target):
    """Binary cross-entropy of probabilities p against a constant target; log clamped like F.binary_cross_entropy."""
    return -(target * p.clamp_min(1e-12).log() + (1 - target) * (1 - p).clamp_min(1e-12).log()).mean()


def d_loss_fn(d_real, d_fake, real_target=1.0, d_wrong=None, mismatch=0.0):
    """Discriminator loss -[t log D(x, y) + log(1 - D(G(z, y), y))]; real_target < 1 is one-sided label
    smoothing (Salimans et al., 2016, sec. 3.4). With d_wrong = D(x, y') for real images paired with wrong
    labels, `mismatch` * -log(1 - D(x, y')) teaches D to reject image/label mismatches (the matching-aware
    discriminator of Reed et al., 2016, sec. 4.1), which pushes G towards images of the asked class."""
    loss = _bce(d_real, real_target) + _bce(d_fake, 0.0)
    if d_wrong is not None and mismatch > 0:
        loss = loss + mismatch * _bce(d_wrong, 0.0)
    return loss


def g_loss_fn(d_fake):
    """Non-saturating generator loss -log D(G(z)) (Goodfellow et al., 2014, sec. 3)."""
    return _bce(d_fake, 1.0)


def one_hot(labels, n=LABEL_DIM):
    return F.one_hot(labels, n).float()


# ---------------------------------------------------------------- command line
# The flags are defined here, with the starter's script; gan/train.py and gan/evaluate.py take their share of them.
def new_parser(description):
    """A parser with the flags of every GAN command: --seed, --truncation, --device, --data_root."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=SEED_RANGE, default=SEED,
                   help=f"random seed of training and of --eval sampling (default: {SEED})")
    p.add_argument("--truncation", type=GANConfig.RANGES["truncation"], default=None,
                   help="scale of z when sampling (truncation trick): training stores it in the checkpoint and uses it "
                        f"for the per-epoch scores (default: {GANConfig.truncation}); --eval overrides the "
                        "checkpoint's value with it (default: the checkpoint's)")
    return add_common_args(p)


def add_train_args(p):
    p.add_argument("--lr", type=LR_RANGE, default=2e-4,
                   help="Adam learning rate of both nets, betas (0.5, 0.999) (default: 2e-4)")
    p.add_argument("--batch_size", type=BATCH_SIZE_RANGE, default=128, help="mini-batch size (default: 128)")
    add_run_args(p, logdir="runs/gan", save_path="models/gan.pt", epochs=30)
    p.add_argument("--lr_decay_epochs", type=Range(0, EPOCHS_RANGE.high), default=None,
                   help="linear learning-rate decay towards 0 over this many final epochs; 0: constant "
                        "(default: half of --num_epochs, 15 of 30)")
    p.add_argument("--ema_decay", type=probability, default=0.999,
                   help="EMA decay of the generator weights that are evaluated and shipped; 0: no EMA (default: 0.999)")
    p.add_argument("--label_smoothing", type=probability, default=0.1,
                   help="one-sided label smoothing: D's target for real images is 1 - this (default: 0.1)")
    p.add_argument("--d_steps", type=Range(1, 100), default=1,
                   help="discriminator updates per generator update (default: 1)")
    p.add_argument("--mismatch", type=Range(0, 100, integer=False), default=1.0,
                   help="weight of the matching-aware D term: real images with wrong labels count as fake (default: 1)")
    p.add_argument("--eval_samples", type=Range(1, 100000), default=1000,
                   help="samples scored by the classifier after each epoch, a multiple of 10, at least 20 "
                        "(default: 1000)")
    p.add_argument("--min_accuracy", type=probability, default=0.99,
                   help="the kept epoch is the lowest per-class FID among epochs with at least this accuracy "
                        "(default: 0.99)")
    return p


def add_eval_args(p):
    p.add_argument("--load_path", default=None, help="--eval: checkpoint to evaluate (default: models/gan.pt)")
    p.add_argument("--grid_path", default=None,
                   help=f"--eval: PNG of the first 100 samples, column = class (default: {GRID_FILE} in the current "
                        "folder)")
    return p


def build_parser():
    """The starter's command line: training, or --eval."""
    p = add_train_args(new_parser("Class-conditional GAN on MNIST: train (default) or --eval."))
    p.add_argument("--eval", action="store_true",
                   help=f"write {SAMPLES_FILE} (1,000 per class) and its grid from --load_path and score them")
    return add_eval_args(p)


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.eval and args.figures_dir:
        raise UserError("--figures_dir is for training; --eval writes its grid to --grid_path")
    if not args.eval and (args.load_path or args.grid_path):
        raise UserError("--load_path and --grid_path are for --eval; use --resume to continue training")
    device = pick_device(args.device)
    # Imported here, not at the top: the starter makes this file both the model, which gan/train.py and
    # gan/evaluate.py import, and the script that runs them.
    if args.eval:
        from gan.evaluate import evaluate
        return evaluate(args, device)
    from gan.train import train
    return train(args, device)
