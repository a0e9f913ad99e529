"""Figures of the shipped RealNVP for the main job: `python realnvp/evaluate.py`.

`report(device, data_root=None)` evaluates models/realnvp.pt live: test bits/dim over the 10,000
test images, and the inpainting protocol (1000 steps, bottom half masked) on the first
REPORT_IMAGES test images with the nearest-neighbour baseline on the same images. The full
protocol runs (100 training images, 1,000 test images) take minutes; their figures, recorded by
`realnvp/inpainting.py --json figures/realnvp_inpainting_*.json`, are added as recorded rows.
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

from mnistgen.data import load_mnist
from mnistgen.utils import MODELS_DIR, REPO_ROOT, add_common_args, pick_device, run_cli
from realnvp import evaluate_bpd, inpaint_mse, load_flow, masked_inputs, nearest_neighbour, run_inpainting

MODEL_PATH = MODELS_DIR / "realnvp.pt"
REPORT_IMAGES = 20
RECORDED = {"train": REPO_ROOT / "figures" / "realnvp_inpainting_train.json",
            "test": REPO_ROOT / "figures" / "realnvp_inpainting_test.json"}
BPD_TARGET = "< 1.85 (aim 1.3)"
MSE_TARGET = "< nearest-neighbour baseline (~0.068 on test), aim 0.045"


def _recorded_rows():
    rows = []
    for split, path in RECORDED.items():
        if not path.is_file():
            continue
        res = json.loads(path.read_text())
        nn_text = f", NN baseline {res['nearest_neighbour']['masked']:.4f}" if "nearest_neighbour" in res else ""
        rows.append((f"RealNVP inpainting MSE, masked half, {res['num_images']} {split} images (recorded by inpainting.py)",
                     f"{res['recovery']['masked']:.4f}{nn_text}", MSE_TARGET))
    return rows


def report(device, data_root=None, model_path=MODEL_PATH, num_images=REPORT_IMAGES):
    """[(figure, value, target)] of the shipped flow; about a minute on a 2-core CPU."""
    device = torch.device(device) if not isinstance(device, torch.device) else device
    model, ckpt = load_flow(model_path, device)
    test_images = load_mnist(train=False, data_root=data_root)[0]
    bpd = evaluate_bpd(model, test_images)
    raw, corrupted, mask = masked_inputs(test_images[:num_images], seed=0)
    with tempfile.TemporaryDirectory() as savedir:
        recovered = run_inpainting(model, corrupted, mask, savedir)
    rec = inpaint_mse(recovered, raw)
    base = inpaint_mse(nearest_neighbour(raw, load_mnist(train=True, data_root=data_root)[0]), raw)
    rows = [("RealNVP test bits/dim (10,000 test images)", f"{bpd:.3f}", BPD_TARGET),
            (f"RealNVP inpainting MSE, masked half, first {num_images} test images",
             f"{rec['masked']:.4f} (NN baseline {base['masked']:.4f})", MSE_TARGET)]
    return rows + _recorded_rows()


@run_cli
def main(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--load_path", default=str(MODEL_PATH), help="checkpoint (default: models/realnvp.pt)")
    p.add_argument("--num_images", type=int, default=REPORT_IMAGES,
                   help=f"test images inpainted live (default: {REPORT_IMAGES})")
    args = p.parse_args(argv)
    start = time.time()
    rows = report(pick_device(args.device), args.data_root, args.load_path, args.num_images)
    for name, value, target in rows:
        print(f"{name}: {value}   (target {target})")
    print(f"({time.time() - start:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
