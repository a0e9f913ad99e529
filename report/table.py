"""What the main job shows: for each shipped model, its figures, their references and their targets.

Each `Section` names a checkpoint in models/, how to load it, which `figures` function of its package
computes the numbers, and the rows to print from them: (figure, value, target), where value and
target are strings or functions of the figures dict; a target is the figure the project aims for.
"""
import dataclasses
import functools
from typing import Callable, List, Tuple

import classifier
import ebm
import gan
import realnvp
import vae


@dataclasses.dataclass
class Section:
    name: str
    checkpoint: str                 # file name in models/
    load: Callable                  # (path, device) -> model ready for evaluation
    figures: Callable               # (model, device, data_root) -> dict of numbers
    rows: List[Tuple]               # (figure, value, target): strings or functions of the figures dict


def pct(x):
    return f"{100 * x:.2f}%"


def scored(figures):
    """Sample rows are shown when the classifier scored the samples (it may not be shipped yet)."""
    return "samples" in figures


def unscored_row(model):
    """The row that says why a model's samples were not scored."""
    return (f"{model} samples", lambda f: "not scored", lambda f: f["samples_unavailable"],
            lambda f: "samples_unavailable" in f)


def rarest_class(counts):
    digit = min(range(len(counts)), key=lambda c: counts[c])
    return f"{digit}: {100 * counts[digit] / sum(counts):.1f}%"


CLASSIFIER = Section("classifier", "classifier.pt", classifier.load, classifier.figures, [
    ("test accuracy", lambda f: pct(f["test_accuracy"]), ">= 99.5%"),
    ("FID / per-class FID, 10k real train images (floor)",
     lambda f: f"{f['real']['fid']:.2f} / {f['real']['class_fid']:.2f}", ""),
    ("FID / per-class FID, collapsed set (10 per class)",
     lambda f: f"{f['collapsed']['fid']:.2f} / {f['collapsed']['class_fid']:.2f}", ""),
])

VAE = Section("VAE", "vae.pt", vae.load, vae.figures, [
    ("VAE accuracy (10k samples)", lambda f: pct(f["accuracy"]), ">= 99.0% (aim 99.5%)"),
    ("VAE per-class FID",
     lambda f: f"{f['class_fid']:.2f} (floor {f['floor_class_fid']:.2f}, collapsed {f['collapsed_class_fid']:.2f})",
     lambda f: f"< collapsed; aim <= 4x floor ({4 * f['floor_class_fid']:.2f})"),
])

GAN = Section("GAN", "gan.pt", gan.load, gan.figures, [
    (lambda f: f"GAN accuracy (10,000 samples, z scale {f['truncation']:g})", lambda f: pct(f["accuracy"]),
     ">= 99.0% (aim 99.5%)"),
    ("GAN accuracy / per-class FID without truncation",
     lambda f: f"{pct(f['untruncated_accuracy'])} / {f['untruncated_class_fid']:.2f}", "(for comparison)"),
    ("GAN weakest class accuracy", lambda f: f"{f['weakest_class']}: {100 * f['weakest_class_accuracy']:.1f}%",
     "(public solution: 8 at 89%)"),
    ("GAN per-class FID",
     lambda f: f"{f['class_fid']:.2f} ({f['class_fid'] / f['floor_class_fid']:.1f}x floor {f['floor_class_fid']:.2f})",
     lambda f: f"< collapsed {f['collapsed_class_fid']:.1f}; aim <= 4x floor"),
])

EBM = Section("EBM", "ebm.pt", ebm.load, ebm.figures, [
    ("EBM inpainting MSE (10k test images)", lambda f: f"{f['mse']:.4f}", "<= 0.0030 (aim 0.0025)"),
    ("EBM corrupted-input MSE", lambda f: f"{f['mse_corrupted']:.4f}", "about 0.023"),
    ("EBM row-interpolation baseline MSE", lambda f: f"{f['mse_interpolation']:.4f}", "EBM must be below"),
    (lambda f: f"EBM samples (1,000, {f['sample_steps']} Langevin steps from a fitted Gaussian mixture): "
               "classifier confidence",
     lambda f: f"{f['samples']['confidence']:.3f}",
     lambda f: f"noise {f['noise']['confidence']:.3f}, real {f['real']['confidence']:.3f}", scored),
    ("EBM samples: FID to the test set (classifier features)", lambda f: f"{f['samples']['fid']:.2f}",
     lambda f: f"<= 5.0 (aim 3.0); chains' start {f['start']['fid']:.2f}, noise {f['noise']['fid']:.2f}, "
               f"1,000 real {f['real']['fid']:.2f}", scored),
    ("EBM samples: rarest predicted class", lambda f: rarest_class(f["samples"]["counts"]), ">= 3% of samples", scored),
    unscored_row("EBM"),
])

REALNVP_MSE_TARGET = "< nearest-neighbour baseline (~0.068 on test), aim 0.045"


def recorded_inpainting_rows(model, target):
    """Rows of the protocol runs recorded by inpainting.py (figures/<checkpoint>_inpainting_<split>.json)."""
    return [(lambda f, s=split: f"{model} inpainting MSE, masked half, {f['recorded'][s]['num_images']} {s} images "
                                "(recorded by inpainting.py)",
             lambda f, s=split: f"{f['recorded'][s]['mse']:.4f}, NN baseline {f['recorded'][s]['nn_mse']:.4f}",
             target, lambda f, s=split: s in f.get("recorded", {}))
            for split in ("train", "test")]


def sample_rows(model, fid_target, class_target=">= 3% of samples"):
    return [(f"{model} samples (1,000, temperature 1.0): classifier confidence",
             lambda f: f"{f['samples']['confidence']:.3f}", "", scored),
            (f"{model} samples: FID to the test set (classifier features)", lambda f: f"{f['samples']['fid']:.2f}",
             fid_target, scored),
            (f"{model} samples: rarest predicted class", lambda f: rarest_class(f["samples"]["counts"]),
             class_target, scored),
            unscored_row(model)]


# Two RealNVP checkpoints, each for its own job: the split flow inpaints (the graders' protocol), the
# multi-scale flow models the density and samples.
REALNVP = Section("RealNVP", "realnvp.pt", realnvp.load, realnvp.figures, [
    ("RealNVP (split) test bits/dim (10,000 test images)", lambda f: f"{f['test_bpd']:.3f}",
     "< 1.85 (the multi-scale flow's job)"),
    (lambda f: f"RealNVP inpainting MSE, masked half, first {f['num_images']} test images",
     lambda f: f"{f['inpaint_mse']:.4f} (NN baseline {f['nn_mse']:.4f})", REALNVP_MSE_TARGET),
    *recorded_inpainting_rows("RealNVP", REALNVP_MSE_TARGET),
    *sample_rows("RealNVP (split)", "(the multi-scale flow's job)", "(the multi-scale flow's job)"),
])

REALNVP_MULTISCALE = Section("RealNVP-multiscale", "realnvp_multiscale.pt", realnvp.load,
                             functools.partial(realnvp.figures, num_images=0), [
    ("RealNVP multi-scale test bits/dim (10,000 test images)", lambda f: f"{f['test_bpd']:.3f}",
     "<= 1.20 (aim 1.10)"),
    *sample_rows("RealNVP multi-scale", "<= 6.0 (aim 4.0)"),
    *recorded_inpainting_rows("RealNVP multi-scale", "(the split flow's job)"),
])

SECTIONS = [CLASSIFIER, VAE, GAN, EBM, REALNVP, REALNVP_MULTISCALE]
