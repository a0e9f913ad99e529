"""The project classifier's view of unconditional samples (no labels to check): its confidence, the classes
it predicts and the FID to the test set in its feature space; and the two references to read them against.

Used by the EBM and RealNVP (their sample.py, `figures`); written for any model that samples without labels.
"""
import math

import torch

from classifier.model import fid_notes, frechet_distance, gaussian_stats, get_scorer, predict
from mnistgen.cache import cached
from mnistgen.data import load_mnist
from mnistgen.utils import UserError


def sample_quality(images, device, data_root=None):
    """dict(confidence: mean max-softmax probability, counts: predicted-class counts (10 ints), fid: Frechet
    distance to the 10,000 test images in the classifier's features; NaN when undefined) of images (N, 1, 28, 28)
    in [0, 1]. Raises a one-line UserError when the classifier is not shipped yet."""
    return _scores(images, device, data_root)[0]


def _scores(images, device, data_root):
    """(sample_quality's dict, why its FID is NaN or None); the same images scored again (the main job's samples,
    the references) are read from the disk cache."""
    scorer = get_scorer(device, data_root)

    def compute():
        probs, feats = predict(scorer.model, images)
        fid = frechet_distance(gaussian_stats(feats), scorer.ref_all)
        why = "; ".join(fid_notes(None, feats) or ["the eigen-decomposition of the covariances failed"])
        return (dict(confidence=probs.max(1).values.mean().item(),
                     counts=torch.bincount(probs.argmax(1), minlength=10).tolist(), fid=fid),
                why if math.isnan(fid) else None)
    return cached("classifier-sample-quality", scorer.cache_key("sample quality", images), compute)


def sample_references(n, data_root=None, seed=42):
    """Two sets of n images to read sample scores against: real training digits, and U(0, 1) noise."""
    real = load_mnist(train=True, data_root=data_root)[0]
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n]
    return {"real training digits": real[pick],
            "uniform noise": torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed + 1))}


def print_sample_scores(sets, device, data_root=None):
    """Score each {name: images} set with `sample_quality`, print a line per set and return {name: scores};
    without the shipped classifier, say so in one line and return what was scored ({})."""
    scores = {}
    try:
        for name, images in sets.items():
            q, why_no_fid = _scores(images, device, data_root)
            scores[name] = q
            fid = f"n/a ({why_no_fid})" if why_no_fid else f"{q['fid']:.2f}"
            print(f"{name}: classifier confidence {q['confidence']:.3f}, FID to the test set {fid} "
                  f"(classifier features), predicted class counts {q['counts']}")
    except UserError as err:
        print(f"no classifier scores: {err}")
    return scores
