"""The classifier's row of the main job's table."""
from classifier.model import DEFAULT_PATH, get_scorer, reference_scores
from classifier.train import test_accuracy


def report(device, data_root=None):
    scorer = get_scorer(device, data_root)
    refs = reference_scores(scorer, data_root)
    real, collapsed = refs["real"], refs["collapsed"]
    return [
        ("test accuracy", f"{100 * test_accuracy(scorer.model, data_root):.2f}%", ">= 99.5%"),
        ("FID / per-class FID, 10k real train images (floor)", f"{real['fid']:.2f} / {real['class_fid']:.2f}", ""),
        ("FID / per-class FID, collapsed set (10 per class)", f"{collapsed['fid']:.2f} / {collapsed['class_fid']:.2f}", ""),
    ]
