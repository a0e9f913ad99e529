"""Score a samples file with the project's classifier: `python classifier/evaluate.py SAMPLES.pt`.

SAMPLES.pt is the assignment's format: a dict with 'imgs' (N, 1, 28, 28) in [0, 1] and
'labels' (N,). Prints accuracy, per-class accuracy, mean confidence, FID and per-class FID
(in the classifier's feature space, against the 10,000 test images), and the same figures
for two references: 10,000 real training images and a mode-collapsed set. A FID needs at least
two images (of each class, for the per-class FID); when a file has fewer, the accuracy is still
printed and a note says which FID is missing and why.
"""
import argparse
import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.model import DEFAULT_PATH, check_samples, fid_notes, format_score, get_scorer, reference_scores
from mnistgen.checkpoint import load_tensors
from mnistgen.utils import UserError, add_common_args, pick_device, run_cli, shown


def load_samples(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no samples file at {path}")
    return check_samples(load_tensors(path, "samples file"), name=str(path))


@run_cli
def main(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("samples", help="a .pt file with 'imgs' and 'labels' (e.g. vae_generated_samples.pt)")
    p.add_argument("--classifier", default=str(DEFAULT_PATH),
                   help=f"classifier checkpoint (default: {shown(DEFAULT_PATH)})")
    p.add_argument("--no_references", action="store_true", help="skip the real-data and collapsed references")
    args = p.parse_args(argv)
    imgs, labels = load_samples(args.samples)
    scorer = get_scorer(pick_device(args.device), args.data_root, args.classifier)
    print(f"{args.samples} ({len(imgs)} images)\n  " + format_score(scorer.score(imgs, labels)))
    for note in fid_notes(labels):
        print(f"  note: {note}")
    if not args.no_references:
        refs = reference_scores(scorer, args.data_root)
        print("reference: 10,000 real training images\n  " + format_score(refs["real"]))
        print("reference: collapsed (10 test images per class, each x100)\n  " + format_score(refs["collapsed"]))


if __name__ == "__main__":
    main()
