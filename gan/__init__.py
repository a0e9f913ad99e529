"""Class-conditional GAN (Problem 4): the starter's file gan/gan.py, training in gan/train.py, evaluation in
gan/evaluate.py."""
from .gan import (DEFAULT_PATH, KIND, Discriminator, GANConfig, Generator, build, build_discriminator, generate_samples,
                  load, main)
from .evaluate import figures

__all__ = ["DEFAULT_PATH", "KIND", "Discriminator", "GANConfig", "Generator", "build", "build_discriminator",
           "generate_samples", "load", "main", "figures"]
