"""Energy-based model (Problem 1): `from ebm import MlpBackbone, Trainer`."""
from .ebm import CHECKPOINT_NAMES, INPAINT_DEFAULTS, KIND, MlpBackbone, Trainer, TrainingDiverged, row_corruption

__all__ = ["MlpBackbone", "Trainer", "TrainingDiverged", "row_corruption", "KIND", "CHECKPOINT_NAMES", "INPAINT_DEFAULTS"]
