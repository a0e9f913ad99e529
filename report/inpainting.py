"""Which model inpaints best: `python -m report.inpainting` runs every shipped model and the references on both
inpainting protocols of the homework, on the same images with the same seeds, and prints one table.

Protocols (the first --num_images test images; the flow protocol also on the graders' first 100 training images):
  ebm   rows 0, 2, ..., 26 get N(0, 0.3^2) noise clipped to [0, 1] (seed 42); MSE over all 784 pixels against the
        clean image: what `python ebm/main.py --play` prints
  flow  images dequantized and rescaled to [0.0001, 0.9999], bottom half replaced by Bernoulli(0.5) noise (seed 0);
        MSE over the masked half: what `python realnvp/inpainting.py` prints
Methods: each model's own inpainting on any mask (the EBM's Langevin chains, the RealNVP flows' gradient ascent on
log p), the conditional VAE and GAN without the label (report/inpainters.py), and the references: the corrupted
input, interpolation, the nearest neighbour and the mean of the 20 nearest neighbours on the observed pixels.

Each cell (method, protocol, split, images) is cached as JSON in --cache_dir under a key made of the checkpoint's
SHA-256 and the method's settings: a changed checkpoint recomputes its own rows only. A method too slow for the
whole study runs on fewer images (the first ones; the table says how many). The last lines are machine-readable:
`method protocol split mse seconds`. One figure per protocol (originals, corrupted, each method; 10 test digits)
goes to --figures_dir.
"""
import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

if not __package__:  # run as a file: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ebm
import gan
import realnvp
import vae
from ebm.protocol import corrupt, inpaint as ebm_inpaint, per_image_mse
from mnistgen.data import load_mnist, sha256
from mnistgen.errors import UserError, run_cli
from mnistgen.files import atomic_write, atomic_write_text, ensure_writable_dir
from mnistgen.paths import MODELS_DIR, MODELS_ENV, RUNS_DIR, shown
from mnistgen.utils import add_common_args, pick_device, positive_int
from realnvp.realnvp import inpaint_mse, inpaint_pixels, masked_inputs
from report.inpainters import (GAN_SIGMA, LATENT_LR, REFINE_STEPS, SEARCH_STEPS, gan_inpainting, interpolation,
                                knn_completion, vae_inpainting)

EBM_SEED = 42     # ebm/main.py --play's default --seed
FLOW_SEED = 0     # realnvp/inpainting.py's default --seed
TRAIN_IMAGES = 100   # the graders' training images (realnvp/inpainting.py's default --num_images)
SHOWN = 10        # digits in the figures
STUDY_DIR = RUNS_DIR / "inpainting"


# ---------------------------------------------------------------------------------------------- protocols
@dataclasses.dataclass
class Case:
    """One protocol on the first images of one split: what the methods see and what they are scored against."""
    protocol: str
    split: str
    target: torch.Tensor      # (N, 1, 28, 28): the clean images (ebm) or the dequantized, rescaled ones (flow)
    corrupted: torch.Tensor   # (N, 1, 28, 28)
    mask: torch.Tensor        # (N, 1, 28, 28), True where a pixel is corrupted and may change
    seed: int
    exclude: Optional[torch.Tensor]   # the images' indices among the training images (train split), else None

    def score(self, recovered):
        """The protocol's MSE, as its own command computes it."""
        if self.protocol == "ebm":
            return per_image_mse(self.target, recovered).mean().item()
        n = len(self.target)
        return inpaint_mse(recovered.reshape(n, -1), self.target.reshape(n, -1))["masked"]


def make_case(protocol, split, images):
    """The protocol's corruption of `images` (the first N of `split`), with its command's seed. The flow protocol
    draws its noise for all N images at once (dequantization, then the Bernoulli halves), so an image's noise
    depends on N, as in realnvp/inpainting.py --num_images N."""
    exclude = torch.arange(len(images)) if split == "train" else None
    if protocol == "ebm":
        corrupted, mask = corrupt(images, EBM_SEED)
        return Case(protocol, split, images, corrupted, mask, EBM_SEED, exclude)
    raw, corrupted, mask = masked_inputs(images, torch.Generator().manual_seed(FLOW_SEED))
    shape = (len(images), 1, 28, 28)
    return Case(protocol, split, raw.view(shape), corrupted.view(shape), mask.view(shape), FLOW_SEED, exclude)


CELLS = [("ebm", "test"), ("flow", "test"), ("flow", "train")]


# ---------------------------------------------------------------------------------------------- methods
@dataclasses.dataclass
class Method:
    name: str
    what: str
    inpaint: Callable                 # (model, case, context) -> recovered (N, 1, 28, 28)
    checkpoint: Optional[str] = None  # file name in the models folder; None: no model
    load: Optional[Callable] = None   # (path, device) -> model
    settings: dict = dataclasses.field(default_factory=dict)   # part of the cache key
    max_images: dict = dataclasses.field(default_factory=dict)  # {(protocol, split): at most this many images}


def ebm_inpainting(trainer, case, context):
    """The EBM protocol: --play's inpainting. The flow protocol's masked pixels are coin flips, not readings of the
    digit, and chains started from them stay far from a digit (held-out training images: MSE 0.13, the interpolation
    0.069): there the chains start from the interpolation instead (start_mix 1: at the start given), with the
    checkpoint's settings otherwise."""
    if case.protocol == "ebm":
        return ebm_inpaint(trainer, case.corrupted, case.mask, case.seed)
    start = interpolation(case.corrupted, case.mask, context["train_mean"])
    return ebm_inpaint(trainer, start, case.mask, case.seed, start_mix=1.0, start_mix_clipped=1.0)


def flow_inpainting(model, case, context):
    n = len(case.corrupted)
    flat = inpaint_pixels(model, case.corrupted.reshape(n, -1), case.mask.reshape(n, -1))
    return flat.view_as(case.corrupted)


# The skeleton's 1,000 gradient-ascent steps take about 0.5 s an image with the split flow and 2.8 s with the
# multi-scale flow (2-core CPU): within the study's 15 minutes they run on these many images per cell, the
# others on all (--all_images lifts these limits). The split flow runs its own protocol on all 1,000 test images.
ASCENT_IMAGES = {"realnvp": {("ebm", "test"): 100},
                 "realnvp_multiscale": {("ebm", "test"): SHOWN, ("flow", "test"): SHOWN, ("flow", "train"): SHOWN}}
LATENT_SETTINGS = dict(search=SEARCH_STEPS, refine=REFINE_STEPS, lr=LATENT_LR)

METHODS = [
    Method("ebm", "EBM: Langevin chains on the masked pixels (ebm/main.py --play's inpainting)",
           ebm_inpainting, "ebm.pt", ebm.load, dict(flow_start="interpolation")),
    Method("realnvp", "RealNVP split flow: the skeleton's 1,000 gradient-ascent steps on log p",
           flow_inpainting, "realnvp.pt", realnvp.load, dict(steps=1000), ASCENT_IMAGES["realnvp"]),
    Method("realnvp_multiscale", "RealNVP multi-scale flow: the same gradient ascent",
           flow_inpainting, "realnvp_multiscale.pt", realnvp.load, dict(steps=1000),
           ASCENT_IMAGES["realnvp_multiscale"]),
    Method("vae", "conditional VAE without the label: MAP latent for each of the 10 labels, the best fit decoded",
           lambda model, case, ctx: vae_inpainting(model, case.corrupted, case.mask, ctx["train_mean"],
                                                   progress="vae")[0],
           "vae.pt", vae.load, LATENT_SETTINGS),
    Method("gan", "conditional GAN without the label: the same latent search through the generator",
           lambda model, case, ctx: gan_inpainting(model, case.corrupted, case.mask, progress="gan")[0],
           "gan.pt", gan.load, dict(LATENT_SETTINGS, sigma=GAN_SIGMA)),
    Method("corrupted", "reference: the corrupted input itself", lambda _, case, ctx: case.corrupted),
    Method("interpolation", "reference: mean of the observed vertical neighbours, else the training mean",
           lambda _, case, ctx: interpolation(case.corrupted, case.mask, ctx["train_mean"])),
    Method("nearest_neighbour", "reference: the training image nearest on the observed pixels (never itself)",
           lambda _, case, ctx: knn_completion(case.corrupted, case.mask, ctx["train_images"], 1, case.exclude)),
    Method("knn20", "reference: the mean of the 20 training images nearest on the observed pixels",
           lambda _, case, ctx: knn_completion(case.corrupted, case.mask, ctx["train_images"], 20, case.exclude)),
]
METHOD_NAMES = [m.name for m in METHODS]


# ---------------------------------------------------------------------------------------------- cache
def cache_path(cache_dir, method, protocol, split, num_images, checkpoint_sha):
    """The cell's JSON file: its name carries a digest of everything that decides the cell's numbers."""
    key = json.dumps(dict(method=method.name, protocol=protocol, split=split, num_images=num_images,
                          checkpoint_sha256=checkpoint_sha, settings=method.settings), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{method.name}-{protocol}-{split}-{num_images}-{digest}.json"


def read_cell(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None   # missing or half-written: recompute


def write_cell(path, cell, recovered):
    """Add the first SHOWN recoveries to `cell` (the figures are drawn from them) and write it."""
    cell["preview"] = [[round(v, 4) for v in row] for row in recovered[:SHOWN].reshape(-1, 784).tolist()]
    atomic_write_text(path, json.dumps(cell))


# ---------------------------------------------------------------------------------------------- the study
class Study:
    """The cells of the chosen methods; images, cases and models loaded once, when a cell needs them."""

    def __init__(self, args, device):
        self.args, self.device = args, device
        self.models_dir, self.cache_dir = Path(args.models_dir), Path(args.cache_dir)
        self._images, self._cases, self._train = {}, {}, None

    def images(self, split, n):
        if split not in self._images:
            self._images[split] = load_mnist(train=split == "train", data_root=self.args.data_root)[0]
        return self._images[split][:n]

    def case(self, protocol, split, n):
        if (protocol, split, n) not in self._cases:
            self._cases[protocol, split, n] = make_case(protocol, split, self.images(split, n))
        return self._cases[protocol, split, n]

    def context(self):
        if self._train is None:
            train = self.images("train", None)
            self._train = dict(train_images=train, train_mean=train.mean(0))
        return self._train

    def split_images(self, split):
        """The images of a split's cells: --num_images test images, the first min(that, TRAIN_IMAGES) training ones."""
        return self.args.num_images if split == "test" else min(self.args.num_images, TRAIN_IMAGES)

    def num_images(self, method, protocol, split):
        limit = math.inf if self.args.all_images else method.max_images.get((protocol, split), math.inf)
        return min(self.split_images(split), limit)

    def run(self, method):
        """{(protocol, split): cell dict} of one method, computed or read from the cache; the model is loaded only
        when a cell is not cached. A missing or broken checkpoint: {'error': why}."""
        sha = None
        if method.checkpoint:
            path = self.models_dir / method.checkpoint
            if not path.is_file():
                return dict(error=f"missing: {shown(path)}")
            sha = sha256(path)
        model, cells = None, {}
        for protocol, split in CELLS:
            n = self.num_images(method, protocol, split)
            where = cache_path(self.cache_dir, method, protocol, split, n, sha)
            cell = None if self.args.recompute else read_cell(where)
            if cell is None:
                if method.checkpoint and model is None:
                    try:
                        model = method.load(self.models_dir / method.checkpoint, self.device)
                    except UserError as err:
                        return dict(error=f"broken: {err}")
                print(f"  {method.name}: {protocol} protocol, {n} {split} images ...", flush=True)
                case, context = self.case(protocol, split, n), self.context()   # data loading is not timed
                start = time.time()
                recovered = method.inpaint(model, case, context).cpu()
                cell = dict(method=method.name, protocol=protocol, split=split, num_images=n,
                            checkpoint_sha256=sha, settings=method.settings, mse=case.score(recovered),
                            seconds=round(time.time() - start, 1))
                write_cell(where, cell, recovered)
                cell["cached"] = False
                print(f"  {method.name}: {protocol} protocol, {split}: MSE {cell['mse']:.4f} "
                      f"in {cell['seconds']:.0f} s", flush=True)
            else:
                cell["cached"] = True
            cells[protocol, split] = cell
        return cells


# ---------------------------------------------------------------------------------------------- output
def cell_text(cell, full):
    if cell is None:
        return ""
    text = f"{cell['mse']:.4f} {cell['seconds']:6.0f} s"
    return text + (f" ({cell['num_images']} images)" if cell["num_images"] != full else "")


def print_table(results, study):
    header = ["method"] + [f"{p} protocol, {s} ({study.split_images(s)}): MSE, time" for p, s in CELLS]
    rows = [header]
    for name, cells in results.items():
        if "error" in cells:
            rows.append([name, cells["error"], "", ""])
            continue
        rows.append([name] + [cell_text(cells[c], study.split_images(c[1])) for c in CELLS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for name, cells in results.items():
        for (protocol, split), cell in ({} if "error" in cells else cells).items():
            print(f"{name} {protocol} {split} {cell['mse']:.6f} {cell['seconds']:.1f}")


def draw_figure(study, results, protocol, path):
    """Originals, corrupted inputs and each method's recovery of the first SHOWN test digits, one labelled row each."""
    import matplotlib   # heavy, and only the figures need it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    case = study.case(protocol, "test", study.split_images("test"))
    n = min(SHOWN, len(case.target))
    rows = {"original": case.target[:n], "corrupted": case.corrupted[:n]}
    for name, cells in results.items():
        cell = cells.get((protocol, "test")) if "error" not in cells else None
        if cell is not None and name != "corrupted":
            rows[name] = torch.tensor(cell["preview"][:n]).view(-1, 1, 28, 28)
    grid = make_grid(torch.cat(list(rows.values())).clamp(0, 1), nrow=n, padding=2, pad_value=1.0)[0]
    fig, ax = plt.subplots(figsize=(0.45 * n + 1.8, 0.45 * len(rows) + 0.4))
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([2 + 30 * i + 14 for i in range(len(rows))], list(rows), fontsize=8)
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(f"{protocol} protocol", fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def build_parser():
    p = add_common_args(argparse.ArgumentParser(prog="python -m report.inpainting", description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--num_images", type=positive_int, default=1000,
                   help=f"test images per protocol; the training images are the first min(N, {TRAIN_IMAGES}) "
                        "(default: 1000)")
    p.add_argument("--methods", nargs="+", choices=METHOD_NAMES, metavar="METHOD", default=METHOD_NAMES,
                   help=f"the rows to compute ({', '.join(METHOD_NAMES)}; default: all)")
    p.add_argument("--models_dir", default=str(MODELS_DIR),
                   help=f"folder of the checkpoints (default: ${MODELS_ENV}, else models/ of the repository)")
    p.add_argument("--cache_dir", default=str(STUDY_DIR / "cache"),
                   help=f"one JSON per cell (default: {shown(STUDY_DIR / 'cache')})")
    p.add_argument("--all_images", action="store_true",
                   help="run the flows' gradient ascent on all the images too, not on the first 100 (split flow, "
                        f"EBM protocol) or {SHOWN} (multi-scale flow) of a cell: hours on a CPU")
    p.add_argument("--recompute", action="store_true", help="ignore the cache (and overwrite it)")
    p.add_argument("--figures_dir", default=str(STUDY_DIR),
                   help=f"where inpainting_ebm.png and inpainting_flow.png go (default: {shown(STUDY_DIR)}; the "
                        "README's are made with --figures_dir figures)")
    return p


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    figures_dir = ensure_writable_dir(args.figures_dir, "--figures_dir")
    ensure_writable_dir(args.cache_dir, "--cache_dir")
    study = Study(args, pick_device(args.device))
    methods = [m for m in METHODS if m.name in args.methods]
    results, start = {}, time.time()
    for i, method in enumerate(methods, 1):
        print(f"[{i}/{len(methods)}] {method.name}: {method.what}", flush=True)
        results[method.name] = study.run(method)
    print()
    print_table(results, study)
    print()
    for protocol in ("ebm", "flow"):
        print(f"figure: {shown(draw_figure(study, results, protocol, figures_dir / f'inpainting_{protocol}.png'))}")
    computed = [c for cells in results.values() if "error" not in cells for c in cells.values() if not c["cached"]]
    print(f"{len(computed)} cells computed now ({sum(c['seconds'] for c in computed):.0f} s), the others read from "
          f"{shown(args.cache_dir)}; wall time {time.time() - start:.0f} s")
    broken = [name for name, cells in results.items() if "error" in cells]
    if broken:
        raise UserError(f"could not evaluate {', '.join(broken)} (see the table)")
    return results


if __name__ == "__main__":
    main()
