"""Choose the EBM's inpainting settings: a coordinate search on held-out TRAINING images (never the test set).

Starting from the checkpoint's settings (or --inpaint_* values), each setting in turn takes every value of its
grid while the others stay fixed; the best value is kept. Prints the best settings as benchmarks/ebm_export.py
flags:
    python benchmarks/ebm_tune.py --load_dir runs/ebm/best.pt
    python benchmarks/ebm_export.py --load_dir runs/ebm/best.pt --out runs/ebm/tuned.pt --inpaint_steps ...
"""
import argparse
import math
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ebm_export import add_inpaint_args, inpaint_overrides
from ebm.ebm import DEFAULT_PATH, load
from ebm.protocol import VAL_IMAGES, evaluate_inpainting
from mnistgen.data import load_mnist
from mnistgen.utils import UserError, add_common_args, pick_device, positive_int, run_cli, shown, take_first

# values tried, one setting at a time
GRID = dict(steps=[10, 14, 18, 22, 30], step_size=[5.0, 10.0, 15.0, 20.0], noise_std=[0.0, 0.005, 0.01, 0.02],
            grad_clip=[0.003, 0.01, 0.03, math.inf], fidelity=[0.0, 0.002, 0.005, 0.01, 0.02], chains=[1, 2, 4],
            start_mix=[0.3, 0.5, 0.7, 1.0], start_mix_clipped=[0.5, 0.7, 0.9, 1.0],
            shifts=[(0,), (0, 1, -1), (0, 1, -1, 2, -2)])


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load_dir", default=str(DEFAULT_PATH),
                   help="checkpoint file, or a folder holding ebm.pt / shipped.pt / best.pt "
                        f"(default: {shown(DEFAULT_PATH)})")
    p.add_argument("--num_images", type=positive_int, default=500,
                   help=f"held-out training images scored (of the last {VAL_IMAGES}; default: 500)")
    p.add_argument("--keys", default=",".join(GRID),
                   help=f"settings to search, in this order, comma-separated (default: {','.join(GRID)})")
    add_inpaint_args(p)
    return add_common_args(p)


def held_out_images(data_root=None):
    """The last VAL_IMAGES training images, never trained on (the test set is for --play only)."""
    return load_mnist(train=True, data_root=data_root)[0][-VAL_IMAGES:]


def coordinate_search(trainer, images, grid, log=print):
    """Starting from the trainer's settings, try each value of one setting at a time, keep the best."""
    def mse(settings):
        return evaluate_inpainting(trainer, images, seed=0, **settings)["mse"].mean().item()

    best = dict(trainer.inpaint_config)
    best_mse = mse(best)
    log(f"start {best}: {best_mse:.6f}")
    for key, values in grid.items():
        for value in values:
            if value != best[key]:
                start = time.time()
                trial_mse = mse({**best, key: value})
                log(f"  {key}={value}: {trial_mse:.6f} ({time.time() - start:.1f}s)")
                if trial_mse < best_mse:
                    best, best_mse = {**best, key: value}, trial_mse
        log(f"best after {key}: {best}: {best_mse:.6f}")
    return best, best_mse


def flag_value(value):
    """A setting as its --inpaint_* flag takes it."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return "none" if value == math.inf else value


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    keys = args.keys.split(",")
    unknown = set(keys) - set(GRID)
    if unknown:
        raise UserError(f"--keys: unknown settings {sorted(unknown)}; choose from {','.join(GRID)}")
    trainer = load(args.load_dir, pick_device(args.device))
    trainer.inpaint_config.update(inpaint_overrides(args))
    images = take_first(held_out_images(args.data_root), args.num_images, "held-out training images")
    best, mse = coordinate_search(trainer, images, {k: GRID[k] for k in keys}, log=lambda s: print(s, flush=True))
    flags = " ".join(f"--inpaint_{k} {flag_value(v)}" for k, v in best.items())
    print(f"best on {len(images)} held-out training images: mean MSE {mse:.6f}\n  {flags}")
    return best


if __name__ == "__main__":
    main()
