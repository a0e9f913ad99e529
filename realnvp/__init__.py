"""RealNVP flows (Problem 2): `from realnvp import RealNVPConfig, build, load, figures`."""
from .realnvp import (ARCH_FIELDS, CHECKPOINT_NAMES, DEFAULT_PATH, KIND, MULTISCALE_PATH, NUM_INPUTS, PRESETS,
                      BatchNormFlow, ConvCouplingLayer, CouplingLayer, FlowSequential, RealNVPConfig,
                      Shuffle, bits_per_dim, build, draw_samples, evaluate_bpd, inpaint_mse, load, masked_inputs,
                      nearest_neighbour, preprocess, recompute_batchnorm, run_inpainting)
from .evaluate import figures, recorded

__all__ = ["RealNVPConfig", "PRESETS", "ARCH_FIELDS", "build", "load", "figures", "recorded", "BatchNormFlow",
           "Shuffle", "CouplingLayer", "ConvCouplingLayer", "FlowSequential", "preprocess",
           "bits_per_dim", "evaluate_bpd", "recompute_batchnorm", "masked_inputs", "inpaint_mse", "nearest_neighbour",
           "run_inpainting", "draw_samples", "KIND", "CHECKPOINT_NAMES", "DEFAULT_PATH", "MULTISCALE_PATH",
           "NUM_INPUTS"]
