"""The project classifier's view of unconditional samples (no labels to check): its confidence, the classes
it predicts and the FID to the test set in its feature space; and the two references to read them against.

Used by the EBM and RealNVP (their sample.py, `figures`); written for any model that samples without labels.
"""
import torch

from classifier.model import frechet_distance, gaussian_stats, get_scorer, predict
from mnistgen.data import load_mnist
from mnistgen.utils import UserError


def sample_quality(images, device, data_root=None):
    """dict(confidence: mean max-softmax probability, counts: predicted-class counts (10 ints), fid: Frechet
    distance to the 10,000 test images in the classifier's features) of images (N, 1, 28, 28) in [0, 1].
    Raises a one-line UserError when the classifier is not shipped yet."""
    scorer = get_scorer(device, data_root)
    probs, feats = predict(scorer.model, images)
    return dict(confidence=probs.max(1).values.mean().item(),
                counts=torch.bincount(probs.argmax(1), minlength=10).tolist(),
                fid=frechet_distance(gaussian_stats(feats), scorer.ref_all))


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
            q = scores[name] = sample_quality(images, device, data_root)
            print(f"{name}: classifier confidence {q['confidence']:.3f}, FID to the test set {q['fid']:.2f} "
                  f"(classifier features), predicted class counts {q['counts']}")
    except UserError as err:
        print(f"no classifier scores: {err}")
    return scores
