"""Class-conditional VAE on MNIST (Problem 3 of the homework): the starter's file, with the model, its loss,
`generate_samples` and the command line.

    python vae/vae.py                                   # train; defaults reproduce models/vae.pt's recipe
    python vae/vae.py --eval --load_path models/vae.pt  # write vae_generated_samples.pt + grid, score them

Model: q(z|x,y) = N(mu, diag(exp(z_logstd))^2) and p(x|z,y) = N(decoder(z,y), exp(recon_logstd)^2 I)
with a learned scalar `recon_logstd`; prior p(z) = N(0, I). The loss is the negative ELBO in nats
per image, -E_q[log p(x|z,y)] + KL(q(z|x,y) || p(z)), with the KL in closed form (Kingma &
Welling, 2014, appendix B). A learned decoder variance weighs the squared error by 1/(2 sigma^2)
with sigma fitted to the data (Rybkin et al., 2021, "calibrated decoders"), which gives sharper
decoder means than a fixed sigma = 1 or a Bernoulli (BCE) decoder.

The training loop is vae/train.py, `--eval` and the figures are vae/evaluate.py; both import this file.
"""
import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Tuple

if __name__ == "__main__":
    # `python vae/vae.py` runs this file as __main__, and train.py / evaluate.py import it as vae.vae: the file
    # would run twice and every class exist twice. So the script runs main() of vae.vae and stops here.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's packages, without installing
    import vae.vae
    vae.vae.main()
    sys.exit()

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mnistgen.checkpoint import load_model
from mnistgen.training import add_run_args
from mnistgen.utils import (BATCH_SIZE_RANGE, EPOCHS_RANGE, LR_RANGE, MODELS_DIR, REPO_ROOT, SEED_RANGE, Range,
                            add_common_args, check_ranges, pick_device, probability, run_cli)

__all__ = ["VAEConfig", "CVAE", "build", "load", "generate_samples", "negative_elbo", "kl_divergence", "gaussian_nll",
           "one_hot", "main", "KIND", "DEFAULT_PATH", "DEFAULT_LOGDIR", "CHECKPOINT_NAMES", "SEED"]

KIND = "vae"
DEFAULT_PATH = MODELS_DIR / "vae.pt"
DEFAULT_LOGDIR = REPO_ROOT / "runs" / "vae"
CHECKPOINT_NAMES = ("vae.pt", "shipped.pt", "best.pt")  # looked for when a folder (e.g. a run folder) is given
SAMPLES_FILE = "vae_generated_samples.pt"  # the starter's --eval output, in the current folder
GRID_FILE = "vae_generated_samples.png"    # --eval's 10x10 grid of those samples, beside them
SEED = 42  # the starter's --seed: the samples of --eval, of the finalists' re-scoring and of the main job
# the starter's main(): label_dim = 10, img_dim = (1, 28, 28), latent_dim = 100
IMG_SIZE, LABEL_SIZE, LATENT_SIZE = (1, 28, 28), 10, 100
LOG_2PI = math.log(2 * math.pi)


@dataclasses.dataclass
class VAEConfig:
    """What rebuilds a CVAE, stored in every checkpoint. The sizes are the starter's CVAE arguments (no
    defaults: a checkpoint must state them); the defaults are those of the shipped model."""
    img_size: Tuple[int, ...]     # (C, H, W)
    label_size: int
    latent_size: int
    hidden_size: int = 256        # the starter's; the trunks are 2 * hidden_size wide
    # std of the prior draws inside `sample`: 1.0 is the model as trained, < 1 trades diversity for
    # fidelity (0.8: the lowest per-class FID at >= 99% accuracy, vae/README.md)
    temperature: float = 0.8

    # The values each field accepts, for a checkpoint's config and for the flag of the same name alike (sizes
    # bounded so that a config cannot ask for terabytes before the first error).
    RANGES = dict(img_size=Range(1, 64), label_size=Range(1, 100), latent_size=Range(1, 4096),
                  hidden_size=Range(1, 2048), temperature=Range(0, 10, integer=False, low_open=True))

    def __post_init__(self):
        if len(self.img_size) != 3:
            raise ValueError(f"img_size must be (C, H, W), got {self.img_size}")
        check_ranges(self, self.RANGES)


# homework: the CVAE (the starter fixes its layers; how the input fcs join the trunk and recon_logstd are ours)
class CVAE(nn.Module):
    """The starter's class and fixed architecture. The image (or latent) fc and the label fc are
    concatenated and passed through a ReLU before the trunk: without it the input fcs and the trunk's
    first Linear would compose into a single linear map, i.e. one hidden layer less."""

    def __init__(self, img_size, label_size, latent_size, hidden_size=256):
        super().__init__()
        self.img_size = tuple(img_size)  # (C, H, W)
        self.label_size = label_size
        self.latent_size = latent_size
        self.hidden_size = hidden_size
        # Encoder.
        '''
        img   -> fc  ->                   -> fc -> mean
                        concat -> encoder                  -> z
        label -> fc  ->                   -> fc -> logstd
        '''
        self.enc_img_fc = nn.Linear(int(np.prod(self.img_size)), self.hidden_size)
        self.enc_label_fc = nn.Linear(self.label_size, self.hidden_size)
        self.encoder = nn.Sequential(
            nn.Linear(2 * self.hidden_size, 2 * self.hidden_size), nn.ReLU(),
            nn.Linear(2 * self.hidden_size, 2 * self.hidden_size), nn.ReLU(),
        )
        self.z_mean = nn.Linear(2 * self.hidden_size, self.latent_size)
        self.z_logstd = nn.Linear(2 * self.hidden_size, self.latent_size)
        # Decoder.
        '''
        latent -> fc ->
                         concat -> decoder -> reconstruction
        label  -> fc ->
        '''
        self.dec_latent_fc = nn.Linear(self.latent_size, self.hidden_size)
        self.dec_label_fc = nn.Linear(self.label_size, self.hidden_size)
        self.decoder = nn.Sequential(
            nn.Linear(2 * self.hidden_size, 2 * self.hidden_size), nn.ReLU(),
            nn.Linear(2 * self.hidden_size, 2 * self.hidden_size), nn.ReLU(),
            nn.Linear(2 * self.hidden_size, int(np.prod(self.img_size))), nn.Sigmoid(),
        )
        # homework: recon_logstd, the log std of the Gaussian p(x|z,y): one learned scalar shared by all pixels
        # (a per-pixel std would shrink without bound on the always-black border pixels, their log-density
        # -> +inf). Training starts it at --recon_logstd_init.
        self.recon_logstd = nn.Parameter(torch.zeros(()))
        # std of the prior draws inside `sample` (VAEConfig.temperature; a plain attribute, not a buffer,
        # so that the state_dict keeps exactly the starter's keys)
        self.temperature = 1.0

    # homework: encode, decode and sample
    def encode(self, batch_img, batch_label):
        """img (B, C, H, W) or (B, C*H*W), one-hot label (B, label_size) -> (z mean, z log std), each (B, latent)."""
        h = torch.cat([self.enc_img_fc(batch_img.reshape(len(batch_img), -1)), self.enc_label_fc(batch_label)], 1)
        h = self.encoder(F.relu(h))
        return self.z_mean(h), self.z_logstd(h)

    def decode(self, batch_latent, batch_label):
        """latent (B, latent), one-hot label (B, label_size) -> decoder mean (B, C*H*W) in [0, 1]."""
        h = torch.cat([self.dec_latent_fc(batch_latent), self.dec_label_fc(batch_label)], 1)
        return self.decoder(F.relu(h))

    def forward(self, batch_img, batch_label):
        """(reconstruction mean (B, C*H*W), z mean, z log std) with z drawn by reparameterisation."""
        mean, logstd = self.encode(batch_img, batch_label)
        z = mean + logstd.exp() * torch.randn_like(mean)
        return self.decode(z, batch_label), mean, logstd

    def sample(self, batch_latent, batch_label):
        """Decoder means (B, C, H, W) in [0, 1] for prior draws `batch_latent` (B, latent), scaled by the
        temperature, and one-hot labels (B, label_size)."""
        with torch.no_grad():
            return self.decode(batch_latent * self.temperature, batch_label).reshape(-1, *self.img_size)


#########################
####  DO NOT MODIFY  ####
def generate_samples(cvae, n_samples_per_class, device):
    cvae.eval()
    latent = torch.randn((n_samples_per_class * 10, cvae.latent_size), device=device)
    label = torch.eye(cvae.label_size, dtype=torch.float, device=device).repeat(n_samples_per_class, 1)
    imgs = cvae.sample(latent, label).cpu()
    label = torch.argmax(label, dim=-1).cpu()
    samples = dict(imgs=imgs, labels=label)
    return samples
#########################


def build(config):
    """A fresh CVAE from a VAEConfig."""
    model = CVAE(config.img_size, config.label_size, config.latent_size, config.hidden_size)
    model.temperature = config.temperature
    return model


def load(path=DEFAULT_PATH, device="cpu"):
    """The CVAE of a checkpoint (file, or folder holding vae.pt / shipped.pt / best.pt) in eval mode. Bad files
    (unreadable, another model, bad config, missing, misshapen or non-finite weights): one-line CheckpointError."""
    return load_model(path, KIND, VAEConfig, build, names=CHECKPOINT_NAMES, device=device)[0]


# ---------------------------------------------------------------------------------------------- loss
# homework: the loss, the negative ELBO (the training loop that minimises it is vae/train.py)

def one_hot(labels, device):
    return F.one_hot(labels, 10).float().to(device)


def kl_divergence(mean, logstd):
    """KL(N(mean, exp(logstd)^2) || N(0, I)) summed over latent dims: (B,)."""
    return 0.5 * (mean.pow(2) + (2 * logstd).exp() - 1).sum(1) - logstd.sum(1)


def gaussian_nll(x, recon, logstd):
    """-log N(x; recon, exp(logstd)^2) summed over pixels: (B,). x, recon (B, C*H*W)."""
    return (0.5 * ((x - recon) * torch.exp(-logstd)).pow(2) + logstd + 0.5 * LOG_2PI).sum(1)


def negative_elbo(model, img, label, kl_weight=1.0):
    """(loss to minimise, dict of per-image means: nelbo, recon (nats), kl, mse). kl_weight < 1 only
    during warm-up; the reported `nelbo` is always the true negative ELBO (kl_weight 1)."""
    x = img.reshape(len(img), -1)
    recon, mean, logstd = model(x, label)
    nll = gaussian_nll(x, recon, model.recon_logstd)
    kl = kl_divergence(mean, logstd)
    loss = (nll + kl_weight * kl).mean()
    stats = dict(nelbo=(nll + kl).mean().item(), recon=nll.mean().item(), kl=kl.mean().item(),
                 mse=(x - recon).pow(2).mean().item())
    return loss, stats


# ---------------------------------------------------------------------------------------------- command line
# The flags are defined here, with the starter's script; vae/train.py and vae/evaluate.py take their share of them.

def new_parser(description):
    """A parser with the flags of every VAE command: --seed, --device, --data_root."""
    p = add_common_args(argparse.ArgumentParser(description=description,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--seed", type=SEED_RANGE, default=SEED, help=f"random seed (training, and the samples of --eval) "
                                                          f"(default: {SEED})")
    return p


def add_train_args(p):
    p.add_argument("--lr", type=LR_RANGE, default=1e-3,
                   help="peak Adam learning rate, cosine-decayed to 5%% (default: 1e-3)")
    p.add_argument("--batch_size", type=BATCH_SIZE_RANGE, default=128, help="mini-batch size (default: 128)")
    add_run_args(p, logdir="runs/vae", save_path="models/vae.pt", epochs=70)
    p.add_argument("--kl_warmup", type=Range(0, EPOCHS_RANGE.high, integer=False), default=5.0,
                   help="epochs of linear KL warm-up from 0 to 1; 0 = none (default: 5)")
    p.add_argument("--recon_logstd_init", type=Range(-10, 10, integer=False), default=-1.0,
                   help="initial log std of p(x|z,y), then learned (default: -1)")
    p.add_argument("--temperature", type=VAEConfig.RANGES["temperature"], default=VAEConfig.temperature,
                   help="std of the prior draws inside sample, stored in the shipped checkpoint; used by the "
                        f"per-epoch checks, the grids and the selection (default: {VAEConfig.temperature})")
    p.add_argument("--check_per_class", type=Range(0, 10000), default=100,
                   help="samples per class scored by the classifier after each epoch to pick the shipped epoch; "
                        "0 = off: the last epoch is shipped (default: 100)")
    p.add_argument("--finalists", type=Range(1, 100), default=3,
                   help="epochs with the lowest check per-class FID re-scored (with the last epoch) on the "
                        "10,000 samples of --eval at the end to pick the shipped one (default: 3)")
    p.add_argument("--min_accuracy", type=probability, default=0.99,
                   help="a finalist is eligible for shipping when the accuracy of its 10,000 samples reaches this "
                        "(default: 0.99)")
    return p


def add_eval_args(p):
    p.add_argument("--load_path", default=str(DEFAULT_PATH),
                   help="checkpoint for --eval: a file, or a folder holding vae.pt, shipped.pt or best.pt "
                        "(default: models/vae.pt)")
    p.add_argument("--grid_path", default=None,
                   help=f"--eval: 10x10 grid of the first 100 samples, column c = class c "
                        f"(default: {GRID_FILE} in the current folder)")
    return p


def parse_args(argv=None):
    """The starter's command line: training, or --eval."""
    p = add_train_args(new_parser(__doc__))
    p.add_argument("--eval", action="store_true",
                   help=f"write {SAMPLES_FILE} (1,000 per class, in the current folder) and a grid from "
                        "--load_path, and score them, instead of training")
    return add_eval_args(p).parse_args(argv)


@run_cli
def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    # Imported here, not at the top: the starter makes this file both the model, which vae/train.py and
    # vae/evaluate.py import, and the script that runs them.
    if args.eval:
        from vae.evaluate import run_eval
        return run_eval(args, device)
    from vae.train import train
    return train(args, device)
