"""Evaluation of the CVAE: `--eval` of vae/vae.py, the main job's `figures`, and the README figures.

    python vae/evaluate.py [--load_path models/vae.pt]   # the same as `python vae/vae.py --eval [flags]`

Every sample set here is the starter's: `generate_samples(model, 1000, device)` after
`torch.manual_seed(seed)` (its latents come from the global generator, so the seed is set globally).
"""
import shutil
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":
    # run as a script: main() of the module vae.evaluate, which the package vae imports too, so that this file
    # runs once and its functions exist once (as in vae/vae.py)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's packages, without installing
    import vae.evaluate
    vae.evaluate.main()
    sys.exit()

import torch

from classifier.model import format_score, get_scorer, reference_scores
from mnistgen.data import batches, load_mnist
from mnistgen.files import atomic_torch_save, atomic_write, ensure_writable, ensure_writable_dir
from mnistgen.utils import CsvLog, UserError, pick_device, plot_curves, run_cli, save_image_grid
from vae.vae import (GRID_FILE, SAMPLES_FILE, SEED, add_eval_args, gaussian_nll, generate_samples, kl_divergence,
                     load, new_parser, one_hot)

CHECK_SEED = 1234  # the fixed draws of the per-epoch checks during training (comparable across epochs)
TEMPERATURES = (1.0, 0.9, 0.8, 0.7, 0.5)
CURVE_PANELS = {"negative ELBO (nats / image)": ["train_nelbo", "test_nelbo"],
                "test terms (nats / image)": ["test_recon", "test_kl"],
                "recon_logstd (log sigma of p(x|z,y))": ["recon_logstd"],
                "per-epoch check (per-class FID)": ["check_class_fid"]}


@torch.no_grad()
def test_statistics(model, images, labels, device, generator, batch_size=1000, active_threshold=0.01):
    """Test-set figures: negative ELBO, its reconstruction and KL terms (nats per image), the
    reconstruction MSE of the posterior mean, and the active latent units (Burda et al., 2016:
    units whose posterior mean varies across images, Var_x E_q[z_i] > threshold). The one z draw per
    image comes from `generator` (CPU)."""
    model.eval()
    totals, means = dict(nelbo=0.0, recon=0.0, kl=0.0, mse=0.0), []
    for x, y in batches(images, labels, batch_size, shuffle=False):
        x, y = x.to(device).reshape(len(x), -1), one_hot(y, device)
        mean, logstd = model.encode(x, y)
        z = mean + logstd.exp() * torch.randn(mean.shape, generator=generator).to(device)
        nll = gaussian_nll(x, model.decode(z, y), model.recon_logstd)
        kl = kl_divergence(mean, logstd)
        totals["nelbo"] += (nll + kl).sum().item()
        totals["recon"] += nll.sum().item()
        totals["kl"] += kl.sum().item()
        totals["mse"] += (x - model.decode(mean, y)).pow(2).mean(1).sum().item()
        means.append(mean.cpu())
    stats = {k: v / len(images) for k, v in totals.items()}
    stats["active_units"] = int((torch.cat(means).var(0) > active_threshold).sum())
    return stats


def try_scorer(device, data_root):
    """The project's classifier-based scorer, or None when models/classifier.pt is not there."""
    try:
        return get_scorer(device, data_root)
    except UserError:
        return None


def sample_check(model, scorer, per_class, device, seed=CHECK_SEED):
    """Accuracy and per-class FID of `per_class` x 10 samples from fixed latents (comparable across epochs)."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(per_class * 10, model.latent_size, generator=g).to(device)
    labels = torch.arange(10).repeat(per_class)
    imgs = model.sample(latent, one_hot(labels, device)).cpu()
    score = scorer.score(imgs, labels)
    return score["accuracy"], score["class_fid"]


def starter_samples(model, device, seed):
    torch.manual_seed(seed)  # the starter's protocol (see the module docstring)
    return generate_samples(model, 1000, device)


# ---------------------------------------------------------------------------------------------- --eval

@run_cli
def main(argv=None):
    args = add_eval_args(new_parser(__doc__)).parse_args(argv)
    return run_eval(args, pick_device(args.device))


def run_eval(args, device):
    """vae_generated_samples.pt (current folder) and the grid of --load_path, its test-set statistics and,
    when models/classifier.pt is there, the classifier's figures with the real-data floor and the collapsed
    reference."""
    samples_path = ensure_writable(SAMPLES_FILE, "samples file (in the current folder)")
    grid_path = ensure_writable(args.grid_path or GRID_FILE, "--grid_path")
    model = load(args.load_path, device)
    samples = starter_samples(model, device, args.seed)
    atomic_torch_save(samples, samples_path)
    save_image_grid(samples["imgs"][:100], grid_path)
    print(f"wrote {samples_path} ({len(samples['imgs'])} samples, 1000 per class) and {grid_path}")
    test_x, test_y = load_mnist(train=False, data_root=args.data_root)
    stats = test_statistics(model, test_x, test_y, device, torch.Generator().manual_seed(args.seed))
    print(f"test set: -ELBO {stats['nelbo']:.2f} nats (reconstruction {stats['recon']:.2f}, KL {stats['kl']:.2f}), "
          f"reconstruction MSE {stats['mse']:.5f}, active units {stats['active_units']}/{model.latent_size}, "
          f"recon_logstd {model.recon_logstd.item():.3f}, temperature {model.temperature}")
    scorer = try_scorer(device, args.data_root)
    if scorer is None:
        print("classifier checkpoint models/classifier.pt not found: accuracy and FID skipped")
        return samples
    print("samples\n  " + format_score(scorer.score(samples["imgs"], samples["labels"])))
    refs = reference_scores(scorer, args.data_root)
    print("reference: 10,000 real training images (floor)\n  " + format_score(refs["real"]))
    print("reference: collapsed (10 test images per class, each x100)\n  " + format_score(refs["collapsed"]))
    return samples


def figures(model, device, data_root=None):
    """The main job's numbers for a loaded CVAE: accuracy and per-class FID of the 10,000 samples of
    `--eval` (seed 42), and the per-class FID of the two references (10,000 real training images: the
    floor; 10 test images per class, each x100: collapsed)."""
    samples = starter_samples(model, device, SEED)
    scorer = get_scorer(device, data_root)
    score = scorer.score(samples["imgs"], samples["labels"])
    refs = reference_scores(scorer, data_root)
    return dict(accuracy=score["accuracy"], class_fid=score["class_fid"],
                floor_class_fid=refs["real"]["class_fid"], collapsed_class_fid=refs["collapsed"]["class_fid"])


# ---------------------------------------------------------------------------------------------- README figures

def curves(logdir, path):
    rows = CsvLog(Path(logdir) / "log.csv").rows()
    if not rows:
        print(f"no {Path(logdir) / 'log.csv'}: curves skipped")
        return
    with tempfile.TemporaryDirectory() as scratch, atomic_write(path) as tmp:  # matplotlib needs a .png name
        shutil.copyfile(plot_curves(rows, "epoch", CURVE_PANELS, Path(scratch) / "curves.png"), tmp)
    print(f"wrote {path}")


@torch.no_grad()
def reconstructions(model, device, data_root, path):
    """Test digits (odd rows) above their reconstructions from the posterior mean (even rows), 5 per class."""
    images, labels = load_mnist(train=False, data_root=data_root)
    idx = torch.cat([torch.nonzero(labels == c).squeeze(1)[:5] for c in range(10)])
    idx = idx.reshape(10, 5).T.reshape(-1)  # 5 rows of 10 classes
    x, y = images[idx].to(device), one_hot(labels[idx], device)
    recon = model.decode(model.encode(x, y)[0], y).reshape(-1, 1, 28, 28).cpu()
    rows = torch.stack([x.cpu().reshape(5, 10, 1, 28, 28), recon.reshape(5, 10, 1, 28, 28)], 1)
    save_image_grid(rows.reshape(-1, 1, 28, 28), path)
    print(f"wrote {path}")


def temperature_sweep(model, device, data_root, seed, temperatures, path):
    """The samples of --eval at several temperatures: two rows of each in one grid, and their scores."""
    scorer, grid, shipped = try_scorer(device, data_root), [], model.temperature
    for t in temperatures:
        model.temperature = t
        samples = starter_samples(model, device, seed)
        grid.append(samples["imgs"][:20])  # two rows of classes 0-9
        if scorer is not None:
            s = scorer.score(samples["imgs"], samples["labels"])
            print(f"temperature {t:.2f}: accuracy {100 * s['accuracy']:.2f}%  per-class FID {s['class_fid']:.3f}  "
                  f"FID {s['fid']:.3f}  confidence {s['confidence']:.4f}")
    model.temperature = shipped
    save_image_grid(torch.cat(grid), path)
    print(f"wrote {path} (two rows per temperature: {', '.join(f'{t:.2f}' for t in temperatures)})")


def readme_figures(load_path, logdir, figures_dir, device, data_root=None, seed=SEED, temperatures=TEMPERATURES):
    """vae_grid.png (the grid of --eval), vae_curves.png (from logdir/log.csv), vae_reconstructions.png and
    vae_temperature.png in `figures_dir`."""
    folder = ensure_writable_dir(figures_dir, "figures folder")
    model = load(load_path, device)
    save_image_grid(starter_samples(model, device, seed)["imgs"][:100], folder / "vae_grid.png")
    print(f"wrote {folder / 'vae_grid.png'}")
    curves(logdir, folder / "vae_curves.png")
    reconstructions(model, device, data_root, folder / "vae_reconstructions.png")
    temperature_sweep(model, device, data_root, seed, temperatures, folder / "vae_temperature.png")
