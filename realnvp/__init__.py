"""RealNVP flow (Problem 2): `from realnvp import FlowSequential, build_flow`."""
from .realnvp import (CHECKPOINT_NAMES, CONFIGS, CONV_CONFIG, DEFAULT_CONFIG, KIND, MLP_CONFIG, NUM_INPUTS,
                      SPLIT_CONFIG, BatchNormFlow, ConvCouplingLayer, CouplingLayer, FlowSequential, Shuffle,
                      bits_per_dim, build_flow,
                      evaluate_bpd, inpaint_mse, load_flow, masked_inputs, nearest_neighbour, preprocess,
                      recompute_batchnorm, run_inpainting)

__all__ = ["BatchNormFlow", "Shuffle", "CouplingLayer", "ConvCouplingLayer", "FlowSequential", "build_flow",
           "load_flow", "preprocess", "bits_per_dim", "evaluate_bpd", "recompute_batchnorm", "masked_inputs",
           "inpaint_mse", "nearest_neighbour", "run_inpainting", "KIND", "CHECKPOINT_NAMES", "NUM_INPUTS",
           "CONFIGS", "DEFAULT_CONFIG", "CONV_CONFIG", "MLP_CONFIG", "SPLIT_CONFIG"]
