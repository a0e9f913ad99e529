"""Figures of a RealNVP checkpoint for the main job: `python realnvp/evaluate.py [--load_path P]` prints them.

`figures(model, device, data_root=None)` evaluates a loaded flow live: test bits/dim over the 10,000
test images, the inpainting protocol (1000 steps, bottom half masked) on the first LIVE_IMAGES
test images with the nearest-neighbour baseline on the same images, and NUM_SAMPLES samples scored by
the classifier. The full protocol runs (100 training images, 1,000 test images) take minutes; their
figures, written by `realnvp/inpainting.py --json figures/<checkpoint name>_inpainting_<split>.json`,
are read back by `recorded()` and included. Numbers only: the report layer (report/table.py) decides
how to show them and what they are compared with.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.unconditional import sample_quality
from mnistgen.data import load_mnist
from mnistgen.paths import MODELS_DIR
from mnistgen.utils import UserError, add_common_args, pick_device, nonnegative_int, run_cli, take_first
from realnvp.realnvp import (DEFAULT_PATH, SHIPPED_PATHS, draw_samples, evaluate_bpd, inpaint_mse, is_split, load,
                             masked_inputs, nearest_neighbour, run_inpainting)

LIVE_IMAGES = 20
NUM_SAMPLES = 1000    # samples (temperature 1.0, seed 0) scored by the classifier, as `realnvp/sample.py` does


def recorded_paths(name):
    """{split: figures/NAME_inpainting_SPLIT.json}: where inpainting.py --json recorded the protocol runs of the
    shipped checkpoint models/NAME.pt. The figures folder beside the models folder: the clone's figures/, also
    for an installed package pointed at the clone's models by $MNISTGEN_MODELS."""
    return {split: MODELS_DIR.parent / "figures" / f"{name}_inpainting_{split}.json" for split in ("train", "test")}


def figures(model, device, data_root=None, num_images=LIVE_IMAGES):
    """{'test_bpd': bits/dim on the 10,000 test images, 'recorded': `recorded()` of the shipped checkpoint of the
    model's architecture, 'samples': the classifier's dict(confidence, counts, fid) of NUM_SAMPLES samples at
    temperature 1.0 (or 'samples_unavailable': why not), and unless num_images is 0: 'num_images': N,
    'inpaint_mse': masked-half MSE of the protocol (seed 0) on the first N test images, 'nn_mse': the
    nearest-neighbour baseline's on the same images}."""
    model = model.to(device).eval()
    test_images = load_mnist(train=False, data_root=data_root)[0]
    live_images = take_first(test_images, num_images, "test images") if num_images else None  # before any work
    name = SHIPPED_PATHS["split" if is_split(model) else "multiscale"].stem   # realnvp or realnvp_multiscale
    numbers = dict(test_bpd=evaluate_bpd(model, test_images), num_samples=NUM_SAMPLES,
                   recorded=recorded(recorded_paths(name)))
    if num_images:
        numbers.update(live_inpainting(model, live_images, data_root))
    try:
        numbers["samples"] = sample_quality(draw_samples(model, NUM_SAMPLES), device, data_root)
    except UserError as err:  # no classifier yet
        numbers["samples_unavailable"] = str(err)
    return numbers


def live_inpainting(model, images, data_root=None):
    """{'num_images', 'inpaint_mse', 'nn_mse'}: the protocol (seed 0) and the nearest-neighbour baseline on `images`."""
    raw, corrupted, mask = masked_inputs(images, torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as savedir:
        recovered = run_inpainting(model, corrupted, mask, savedir)
    baseline = nearest_neighbour(raw, load_mnist(train=True, data_root=data_root)[0])
    return dict(num_images=len(images), inpaint_mse=inpaint_mse(recovered, raw)["masked"],
                nn_mse=inpaint_mse(baseline, raw)["masked"])


def recorded(paths):
    """{split: {'num_images', 'mse': masked-half MSE of the recovery, 'nn_mse': the baseline's (when it was
    run)}} of the full protocol runs recorded by `inpainting.py --json` (those whose file exists)."""
    out = {}
    for split, path in paths.items():
        if Path(path).is_file():
            res = json.loads(Path(path).read_text())
            out[split] = dict(num_images=res["num_images"], mse=res["recovery"]["masked"])
            if "nearest_neighbour" in res:
                out[split]["nn_mse"] = res["nearest_neighbour"]["masked"]
    return out


@run_cli
def main(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--load_path", default=str(DEFAULT_PATH), help="checkpoint (default: models/realnvp.pt)")
    p.add_argument("--num_images", type=nonnegative_int, default=LIVE_IMAGES,
                   help=f"test images inpainted live, 0 for none (default: {LIVE_IMAGES})")
    args = p.parse_args(argv)
    start = time.time()
    device = pick_device(args.device)
    res = figures(load(args.load_path, device), device, args.data_root, args.num_images)
    print(f"test bits/dim (10,000 test images): {res['test_bpd']:.3f}")
    if "inpaint_mse" in res:
        print(f"inpainting MSE, masked half, first {res['num_images']} test images: {res['inpaint_mse']:.4f} "
              f"(NN baseline {res['nn_mse']:.4f})")
    for split, rec in res["recorded"].items():
        base = f", NN baseline {rec['nn_mse']:.4f}" if "nn_mse" in rec else ""
        print(f"inpainting MSE, masked half, {rec['num_images']} {split} images (recorded by inpainting.py): "
              f"{rec['mse']:.4f}{base}")
    if "samples" in res:
        q = res["samples"]
        print(f"{res['num_samples']} samples at temperature 1.0: classifier confidence {q['confidence']:.3f}, FID to "
              f"the test set {q['fid']:.2f} (classifier features), predicted class counts {q['counts']}")
    print(f"({time.time() - start:.0f} s)")
    return res


if __name__ == "__main__":
    main()
