"""Class-conditional VAE (Problem 3): `from vae import VAEConfig, build, load, figures, CVAE, generate_samples`.

`python vae/vae.py` trains, `python vae/vae.py --eval` samples and scores.
"""
from .vae import (CHECKPOINT_NAMES, CVAE, DEFAULT_LOGDIR, DEFAULT_PATH, KIND, SEED, VAEConfig, build, generate_samples,
                  load, main, negative_elbo, one_hot)
from .evaluate import figures

__all__ = ["VAEConfig", "CVAE", "build", "load", "figures", "generate_samples", "negative_elbo", "one_hot", "main",
           "KIND", "DEFAULT_PATH", "DEFAULT_LOGDIR", "CHECKPOINT_NAMES", "SEED"]
