"""Write a copy of an EBM checkpoint in the shipped form (weights and config), with other inpainting settings:
    python ebm/export.py --load_dir runs/ebm/best.pt --out runs/ebm/tuned.pt --inpaint_steps 60
The settings are stored in the checkpoint's config, so `ebm/main.py --play` and the report use them.
"""
import argparse
import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ebm.ebm import DEFAULT_PATH, load
from ebm.protocol import add_inpaint_args, inpaint_overrides
from mnistgen.files import ensure_writable
from mnistgen.utils import REPO_ROOT, add_common_args, pick_device, run_cli


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load_dir", default=str(DEFAULT_PATH.relative_to(REPO_ROOT)),
                   help="checkpoint file, or a folder holding ebm.pt / shipped.pt / best.pt (default: models/ebm.pt)")
    p.add_argument("--out", required=True, help="path of the checkpoint to write (required)")
    add_inpaint_args(p)
    return add_common_args(p)


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    out = ensure_writable(args.out, "--out")
    trainer = load(args.load_dir, pick_device(args.device))
    trainer.inpaint_config.update(inpaint_overrides(args))
    trainer.save(out)
    print(f"wrote {out} (inpainting: {trainer.inpaint_config})")
    return out


if __name__ == "__main__":
    main()
