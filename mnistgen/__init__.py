"""Helpers shared by the four generative models and the scoring classifier."""
from mnistgen.errors import UserError, run_cli
from mnistgen.paths import MODELS_DIR, REPO_ROOT
from mnistgen.utils import pick_device, seed_everything

__all__ = ["MODELS_DIR", "REPO_ROOT", "UserError", "run_cli", "pick_device", "seed_everything"]
