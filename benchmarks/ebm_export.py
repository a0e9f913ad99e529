"""Write a copy of an EBM checkpoint in the shipped form (weights and config), with other inpainting settings:
    python benchmarks/ebm_export.py --load_dir runs/ebm/best.pt --out runs/ebm/tuned.pt --inpaint_steps 60
The settings are stored in the checkpoint's config, so `ebm/main.py --play` and the report use them.
benchmarks/ebm_tune.py searches them and prints them as this script's flags.
"""
import argparse
import math
import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ebm.ebm import DEFAULT_PATH, INPAINT_KEYS, load
from mnistgen.files import ensure_writable
from mnistgen.utils import (add_common_args, nonnegative_float, pick_device, positive_float, positive_int,
                            probability, run_cli, shown)


def clip_float(text):
    """A float > 0, or 'none' (= inf: no clipping)."""
    return math.inf if text.lower() == "none" else positive_float(text)


def int_tuple(text):
    """Comma-separated distinct integers, e.g. '0,1,-1'."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text}") from None
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct integers, got {text}")
    return values


def add_inpaint_args(parser):
    """--inpaint_steps, ... (one per `INPAINT_KEYS`): override the checkpoint's inpainting settings."""
    kinds = dict(steps=positive_int, step_size=nonnegative_float, noise_std=nonnegative_float, chains=positive_int,
                 grad_clip=clip_float, fidelity=nonnegative_float, start_mix=probability, start_mix_clipped=probability,
                 shifts=int_tuple)
    texts = dict(steps="Langevin steps", step_size="step size", noise_std="noise std", chains="chains averaged",
                 grad_clip="pixel-gradient clip ('none' = off)", fidelity="pull towards the observed pixels per step",
                 start_mix="weight of the observation (vs row interpolation) where the chains start",
                 start_mix_clipped="the same where the observation is exactly 0 or 1",
                 shifts="horizontal shifts averaged, comma-separated, e.g. 0,1,-1")
    for key in INPAINT_KEYS:
        parser.add_argument(f"--inpaint_{key}", type=kinds[key], default=None,
                            help=f"inpainting {texts[key]} (default: the checkpoint's)")
    return parser


def inpaint_overrides(args):
    """The --inpaint_* flags that were given, as {steps: .., ...}."""
    return {key: getattr(args, f"inpaint_{key}") for key in INPAINT_KEYS if getattr(args, f"inpaint_{key}") is not None}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load_dir", default=str(DEFAULT_PATH),
                   help="checkpoint file, or a folder holding ebm.pt / shipped.pt / best.pt "
                        f"(default: {shown(DEFAULT_PATH)})")
    p.add_argument("--out", required=True, help="path of the checkpoint to write (required)")
    add_inpaint_args(p)
    return add_common_args(p)


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    out = ensure_writable(args.out, "--out")
    trainer = load(args.load_dir, pick_device(args.device))
    trainer.inpaint_config.update(inpaint_overrides(args))
    trainer.save(out)
    print(f"wrote {out} (inpainting: {trainer.inpaint_config})")
    return out


if __name__ == "__main__":
    main()
