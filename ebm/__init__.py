"""Energy-based model (Problem 1): `from ebm import EBMConfig, build, load, MlpBackbone, Trainer, figures`."""
from .ebm import (CHECKPOINT_NAMES, DEFAULT_PATH, INPAINT_KEYS, KIND, EBMConfig, MlpBackbone, Trainer, TrainingDiverged,
                  build, load, row_corruption)
from .protocol import figures

__all__ = ["EBMConfig", "MlpBackbone", "Trainer", "TrainingDiverged", "build", "load", "figures", "row_corruption",
           "KIND", "CHECKPOINT_NAMES", "DEFAULT_PATH", "INPAINT_KEYS"]
