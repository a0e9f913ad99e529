"""README figures and supporting numbers of the VAE (run after training and `--eval`):

    python vae/figures.py [--load_path models/vae.pt] [--logdir runs/vae]

writes figures/vae_curves.png (training curves from --logdir/log.csv, when present),
figures/vae_reconstructions.png (test digits, odd rows, above their reconstructions, even rows)
and figures/vae_temperature.png (the same latents at several sampling temperatures), and
prints the accuracy / per-class FID of 10,000 samples at each temperature (the cost of
shrinking the latent inside `sample`).
"""
import argparse
from pathlib import Path

import sys
import torch

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.data import load_mnist
from mnistgen.utils import (REPO_ROOT, CsvLog, add_common_args, pick_device, plot_curves, run_cli, save_image_grid,
                            seed_everything)
from vae import DEFAULT_LOGDIR, DEFAULT_PATH, generate_samples, load_vae, one_hot, try_scorer

FIGURES = REPO_ROOT / "figures"


def curves(logdir, path):
    rows = CsvLog(Path(logdir) / "log.csv").rows()
    if not rows:
        print(f"no {Path(logdir) / 'log.csv'}: curves skipped")
        return
    plot_curves(rows, "epoch", {"negative ELBO (nats / image)": ["train_nelbo", "test_nelbo"],
                                "test terms (nats / image)": ["test_kl"],
                                "recon_logstd (log sigma of p(x|z,y))": ["recon_logstd"],
                                "per-epoch check (100 / class)": ["check_class_fid"]}, path)
    print(f"wrote {path}")


@torch.no_grad()
def reconstructions(model, device, data_root, path):
    images, labels = load_mnist(train=False, data_root=data_root)
    idx = torch.cat([torch.nonzero(labels == c).squeeze(1)[:5] for c in range(10)])
    idx = idx.reshape(10, 5).T.reshape(-1)  # 5 rows of 10 classes
    x, y = images[idx].to(device), one_hot(labels[idx], device)
    recon = model.decode(model.encode(x, y)[0], y).reshape(-1, 1, 28, 28).cpu()
    rows = torch.stack([x.cpu().reshape(5, 10, 1, 28, 28), recon.reshape(5, 10, 1, 28, 28)], 1)
    save_image_grid(rows.reshape(-1, 1, 28, 28), path)
    print(f"wrote {path}")


def temperature_sweep(args, device, temperatures, path):
    scorer = try_scorer(device, args.data_root)
    grid = []
    for t in temperatures:
        model = load_vae(args.load_path, device, temperature=t)
        seed_everything(args.seed)
        samples = generate_samples(model, 1000, device)
        grid.append(samples["imgs"][:20])  # two rows of classes 0-9
        if scorer is not None:
            s = scorer.score(samples["imgs"], samples["labels"])
            print(f"temperature {t:.2f}: accuracy {100 * s['accuracy']:.2f}%  per-class FID {s['class_fid']:.3f}  "
                  f"FID {s['fid']:.3f}  confidence {s['confidence']:.4f}")
    save_image_grid(torch.cat(grid), path)
    print(f"wrote {path} (two rows per temperature: {', '.join(f'{t:.2f}' for t in temperatures)})")


@run_cli
def main(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--load_path", default=str(DEFAULT_PATH), help="VAE checkpoint (default: models/vae.pt)")
    p.add_argument("--logdir", default=str(DEFAULT_LOGDIR), help="training run with log.csv (default: runs/vae)")
    p.add_argument("--seed", type=int, default=42, help="seed of the samples, as --eval (default: 42)")
    p.add_argument("--temperatures", default="1.0,0.9,0.8,0.7,0.5",
                   help="comma-separated sampling temperatures to compare (default: 1.0,0.9,0.8,0.7,0.5)")
    args = p.parse_args(argv)
    try:
        temperatures = [float(t) for t in args.temperatures.split(",")]
    except ValueError:
        p.error(f"--temperatures must be comma-separated numbers, got {args.temperatures}")
    if any(t <= 0 for t in temperatures):
        p.error("--temperatures must be > 0")
    device = pick_device(args.device)
    curves(args.logdir, FIGURES / "vae_curves.png")
    model = load_vae(args.load_path, device)
    reconstructions(model, device, args.data_root, FIGURES / "vae_reconstructions.png")
    temperature_sweep(args, device, temperatures, FIGURES / "vae_temperature.png")


if __name__ == "__main__":
    main()
