"""Class-conditional GAN (Problem 4); everything lives in gan/gan.py."""
from .gan import (DEFAULT_PATH, IMG_DIM, KIND, LABEL_DIM, LATENT_DIM, Discriminator, GanTrainer, Generator,
                  d_loss_fn, evaluate_generator, g_loss_fn, generate_samples, load_gan, main,
                  recalibrate_bn, report)
