"""The scoring classifier: a small CNN, its augmentation, and the figures it gives generated digits.

Scores of a samples file: accuracy, per-class accuracy, mean confidence, and two diversity
figures in the classifier's penultimate (128-d) feature space against the 10,000 test images:
FID (Heusel et al., 2017) and the mean over classes of the per-class FID.
"""
import dataclasses
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mnistgen.cache import cached, tensor_digest, weights_digest
from mnistgen.checkpoint import check_tensors, load_model
from mnistgen.data import SHA256 as MNIST_SHA256, find_root, load_mnist
from mnistgen.utils import MODELS_DIR, Range, UserError, check_ranges

KIND = "classifier"
DEFAULT_PATH = MODELS_DIR / "classifier.pt"
STATS_VERSION = 1  # of the cached statistics: bump when predict, gaussian_stats or the references change


def conv_block(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


@dataclasses.dataclass
class ClassifierConfig:
    """The classifier's constructor settings; stored in its checkpoint, rebuilt by `load`."""
    width: int = 32         # channels of the first conv layers
    feature_dim: int = 128  # the penultimate features in which the FIDs are measured
    RANGES = dict(width=Range(1, 512), feature_dim=Range(1, 4096))  # a flag and a checkpoint are held to these

    def __post_init__(self):
        check_ranges(self, self.RANGES)


class MnistClassifier(nn.Module):
    def __init__(self, width=ClassifierConfig.width, feature_dim=ClassifierConfig.feature_dim):
        super().__init__()
        self.config = ClassifierConfig(width, feature_dim)
        w = width
        self.body = nn.Sequential(
            conv_block(1, w), conv_block(w, w), nn.MaxPool2d(2),            # 28 -> 14
            conv_block(w, 2 * w), conv_block(2 * w, 2 * w), nn.MaxPool2d(2),  # 14 -> 7
            conv_block(2 * w, 4 * w), nn.MaxPool2d(2),                       # 7 -> 3
            nn.Flatten(),
            nn.Linear(4 * w * 9, feature_dim, bias=False), nn.BatchNorm1d(feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, 10))

    def features(self, x):
        """Penultimate features (B, feature_dim) of images (B, 1, 28, 28) in [0, 1]."""
        return self.body((x - 0.1307) / 0.3081)

    def forward(self, x):
        return self.head(self.features(x))


def augment(x, generator=None):
    """Random small affine warps (rotation +-12 deg, scale 0.9-1.1, shift +-2.5 px), batched."""
    b = x.shape[0]
    rand = lambda: torch.rand(b, generator=generator) * 2 - 1
    angle = rand() * math.radians(12)
    scale = 1 + 0.1 * rand()
    shift = torch.stack([rand(), rand()], 1) * (2.5 / 14)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(x)
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def build(config):
    return MnistClassifier(config.width, config.feature_dim)


def load(path=DEFAULT_PATH, device="cpu"):
    """The classifier of a checkpoint (a file, or a folder holding classifier.pt), in eval mode."""
    return load_model(path, KIND, ClassifierConfig, build, names=("classifier.pt",), device=device)[0]


@torch.no_grad()
def predict(model, images, batch_size=1000):
    """(softmax probabilities (N, 10), features (N, d)) for images (N, 1, 28, 28)."""
    device = next(model.parameters()).device
    probs, feats = [], []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float()
        f = model.features(x)
        probs.append(F.softmax(model.head(f), 1).cpu())
        feats.append(f.cpu())
    return torch.cat(probs), torch.cat(feats)


def gaussian_stats(features):
    """(mean, covariance) of features (N, d); NaN where undefined (fewer than two rows, non-finite features),
    without numpy's warnings about it."""
    f = features.double().numpy()
    with np.errstate(all="ignore"):
        if len(f) < 2:
            return np.full(f.shape[1], np.nan) if len(f) == 0 else f[0].copy(), np.full((f.shape[1],) * 2, np.nan)
        return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(stats_a, stats_b):
    """||mu_a - mu_b||^2 + tr(Sa + Sb - 2 (Sa Sb)^(1/2)), with the trace of the square root taken
    as the sum of sqrt-eigenvalues of Sa^(1/2) Sb Sa^(1/2) (symmetric, so eigh is stable).
    NaN when it is undefined: statistics that are not finite (`fid_notes` says why), or an eigen-decomposition
    that does not converge; never an exception, so every caller can print n/a."""
    (mu_a, cov_a), (mu_b, cov_b) = stats_a, stats_b
    if not all(np.isfinite(a).all() for a in (mu_a, cov_a, mu_b, cov_b)):
        return float("nan")
    try:
        vals, vecs = np.linalg.eigh(cov_a)
        sqrt_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
        middle = sqrt_a @ cov_b @ sqrt_a
        trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    except np.linalg.LinAlgError:
        return float("nan")
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def check_samples(samples, name="samples"):
    """Validate a samples dict of the assignment's format; return (imgs float (N,1,28,28), labels int64 (N,))."""
    if not isinstance(samples, dict) or "imgs" not in samples or "labels" not in samples:
        raise UserError(f"{name} must be a dict with 'imgs' and 'labels'")
    imgs, labels = samples["imgs"], samples["labels"]
    if not torch.is_tensor(imgs) or not torch.is_tensor(labels):
        raise UserError(f"{name}: 'imgs' and 'labels' must be tensors")
    check_tensors({"imgs": imgs, "labels": labels}, name)  # dense, on the CPU, finite
    if imgs.dim() != 4 or tuple(imgs.shape[1:]) != (1, 28, 28):
        raise UserError(f"{name}: 'imgs' must have shape (N, 1, 28, 28), got {tuple(imgs.shape)}")
    if not torch.is_floating_point(imgs):
        raise UserError(f"{name}: 'imgs' must be floating point, got {imgs.dtype}")
    if labels.shape != (imgs.shape[0],) or torch.is_floating_point(labels) or labels.dtype == torch.bool:
        raise UserError(f"{name}: 'labels' must be integers of shape ({imgs.shape[0]},), "
                        f"got {labels.dtype} {tuple(labels.shape)}")
    if len(imgs) == 0:
        raise UserError(f"{name} holds no images")
    if not torch.isfinite(imgs).all():
        raise UserError(f"{name}: 'imgs' contains NaN or infinite values")
    if imgs.min() < 0 or imgs.max() > 1:
        raise UserError(f"{name}: 'imgs' must be in [0, 1], got [{imgs.min():.3g}, {imgs.max():.3g}]")
    if labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{name}: 'labels' must be digits 0-9")
    return imgs.float(), labels.long()


def fid_notes(labels, features=None):
    """Why the FIDs of a set with these labels (int64 (N,); None for an unlabelled set, which has no per-class FID)
    are undefined; empty when both are defined. A Frechet distance compares covariances, and a covariance needs at
    least two images (of each class present, for the per-class FID) and finite classifier features (N, d), when
    they are given. A FID that is NaN with no note here is one whose eigen-decomposition failed."""
    count = len(labels if labels is not None else features)
    notes = []
    if count < 2:
        notes.append(f"FID needs at least two images to estimate a covariance; the set has {count}")
    if features is not None and not torch.isfinite(features).all():
        bad = int((~torch.isfinite(features)).any(1).sum())
        notes.append(f"the classifier's features of {bad} of the {count} images are NaN or infinite "
                     "(images with NaN or huge values)")
    if labels is None:
        return notes
    single = [c for c, n in enumerate(torch.bincount(labels, minlength=10).tolist()) if n == 1]
    if single:
        which = f"class {single[0]} has" if len(single) == 1 else f"classes {', '.join(map(str, single))} have"
        notes.append(f"per-class FID needs at least two images of every class present; {which} only one")
    return notes


def reference_statistics(model, test_images, test_labels):
    """What samples are scored against: the Gaussian statistics (mean, covariance; float64 tensors) of the
    classifier's features of the test images, overall and per class, and its accuracy on them."""
    probs, feats = predict(model, test_images)
    stats = lambda f: tuple(torch.from_numpy(a) for a in gaussian_stats(f))
    return dict(all=stats(feats), per_class=[stats(feats[test_labels == c]) for c in range(10)],
                accuracy=(probs.argmax(1) == test_labels).float().mean().item())


def stats_key(model, what, **details):
    """The cache key of figures of `model` on MNIST: its weights, the MNIST files (verified against these
    SHA-256 sums whenever they are read), the version of the code computing them and the device kind (the cache
    adds the thread count)."""
    device = next(model.parameters()).device.type
    return dict(what=what, version=STATS_VERSION, classifier=weights_digest(model), mnist=MNIST_SHA256,
                device=device, **details)


def cached_reference_statistics(model, data_root=None):
    """`reference_statistics` of the 10,000 test images, computed once per classifier and kept on disk."""
    find_root(data_root)  # the data must be there and verified, as when the figures are computed
    return cached("classifier-test-reference", stats_key(model, "test reference"),
                  lambda: reference_statistics(model, *load_mnist(train=False, data_root=data_root)))


class Scorer:
    """Scores sets of digit images against reference statistics of the 10,000 test images."""

    def __init__(self, model, reference):
        self.model = model
        as_numpy = lambda stats: tuple(t.numpy() for t in stats)
        self.ref_all = as_numpy(reference["all"])
        self.ref_class = {c: as_numpy(s) for c, s in enumerate(reference["per_class"])}
        self.test_accuracy = reference["accuracy"]
        self.reference_digest = tensor_digest(*reference["all"], *[t for s in reference["per_class"] for t in s])
        self.references = {}  # reference_scores' cache

    def cache_key(self, what, *inputs):
        """The disk cache's key of figures of `inputs` (tensors) scored against this scorer's references."""
        return stats_key(self.model, what, reference=self.reference_digest, inputs=tensor_digest(*inputs))

    def score(self, imgs, labels):
        """Accuracy, confidence and FIDs of images (N, 1, 28, 28) with labels (N,); a FID that `fid_notes`
        says is undefined is NaN. The same images scored again are read from the disk cache."""
        return cached("classifier-scores", self.cache_key("scores", imgs, labels),
                      lambda: self.compute_score(imgs, labels))

    def compute_score(self, imgs, labels):
        probs, feats = predict(self.model, imgs)
        pred = probs.argmax(1)
        correct = (pred == labels).float()
        per_class = {c: correct[labels == c].mean().item() for c in range(10) if (labels == c).any()}
        class_fids = {c: frechet_distance(gaussian_stats(feats[labels == c]), self.ref_class[c])
                      for c in range(10) if (labels == c).sum() > 1}
        all_classes = len(class_fids) == len(per_class)
        return dict(
            accuracy=correct.mean().item(),
            per_class_accuracy=per_class,
            confidence=probs.max(1).values.mean().item(),
            fid=frechet_distance(gaussian_stats(feats), self.ref_all) if len(feats) > 1 else float("nan"),
            class_fid=float(np.mean(list(class_fids.values()))) if class_fids and all_classes else float("nan"),
            per_class_fid=class_fids,
        )


def collapsed_reference(test_images, test_labels, per_class=10, repeats=100, seed=0):
    """What a mode-collapsed generator gives: `per_class` distinct test images per class, each repeated."""
    g = torch.Generator().manual_seed(seed)
    imgs, labels = [], []
    for c in range(10):
        idx = torch.nonzero(test_labels == c).squeeze(1)
        pick = idx[torch.randperm(len(idx), generator=g)[:per_class]]
        imgs.append(test_images[pick].repeat_interleave(repeats, 0))
        labels.append(torch.full((per_class * repeats,), c))
    return torch.cat(imgs), torch.cat(labels)


def format_score(score):
    per_class = " ".join(f"{c}:{100 * a:.1f}" for c, a in score["per_class_accuracy"].items())
    fid, class_fid = ("n/a" if math.isnan(v) else f"{v:.3f}" for v in (score["fid"], score["class_fid"]))
    return (f"accuracy {100 * score['accuracy']:.2f}%  confidence {score['confidence']:.4f}  "
            f"FID {fid}  per-class FID {class_fid}\n"
            f"  per-class accuracy (%): {per_class}")


_SCORERS = {}


def get_scorer(device="cpu", data_root=None, path=DEFAULT_PATH):
    """The project's Scorer (shipped classifier + test-set statistics), built once per process, its statistics
    read from the disk cache. Raises a one-line UserError when the classifier checkpoint is missing."""
    key = (str(device), str(data_root), str(path))
    if key not in _SCORERS:
        model = load(path, device)
        _SCORERS[key] = Scorer(model, cached_reference_statistics(model, data_root))
    return _SCORERS[key]


def reference_scores(scorer, data_root=None, seed=0):
    """Scores of two references: 10,000 real training images (the floor a perfect generator
    reaches) and a mode-collapsed set (10 test images per class, each repeated 100 times); cached on disk."""
    key = (str(data_root), seed)
    if key not in scorer.references:
        def compute():
            train_images, train_labels = load_mnist(train=True, data_root=data_root)
            pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:10000]
            test_images, test_labels = load_mnist(train=False, data_root=data_root)
            return dict(real=scorer.score(train_images[pick], train_labels[pick]),
                        collapsed=scorer.score(*collapsed_reference(test_images, test_labels, seed=seed)))
        find_root(data_root)
        scorer.references[key] = cached("classifier-reference-scores",
                                        stats_key(scorer.model, "reference scores", seed=seed), compute)
    return scorer.references[key]


def accuracy_on_test_set(model, data_root=None):
    """Fraction of the 10,000 test images the model classifies correctly."""
    images, labels = load_mnist(train=False, data_root=data_root)
    probs, _ = predict(model, images)
    return (probs.argmax(1) == labels).float().mean().item()


def figures(model, device, data_root=None):
    """The main job's numbers of a classifier: its test accuracy, and the scores (FID, per-class FID, ...)
    of the two references in its feature space: 10,000 real training images (the floor) and the
    collapsed set."""
    scorer = Scorer(model.to(device).eval(), cached_reference_statistics(model, data_root))
    refs = reference_scores(scorer, data_root)
    return dict(test_accuracy=scorer.test_accuracy, real=refs["real"], collapsed=refs["collapsed"])
