"""Class-conditional VAE (Problem 3): `python vae/vae.py` trains, `--eval` samples and scores."""
from .vae import (CVAE, DEFAULT_LOGDIR, DEFAULT_PATH, KIND, generate_samples, load_vae, main, negative_elbo, one_hot,
                  report, try_scorer)

__all__ = ["CVAE", "DEFAULT_LOGDIR", "DEFAULT_PATH", "KIND", "generate_samples", "load_vae", "main", "negative_elbo",
           "one_hot", "report", "try_scorer"]
