"""Helpers shared by the four generative models and the scoring classifier."""
from mnistgen.utils import REPO_ROOT, UserError, run_cli, pick_device, seed_everything

__all__ = ["REPO_ROOT", "UserError", "run_cli", "pick_device", "seed_everything"]
