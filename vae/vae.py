"""Class-conditional VAE on MNIST (Problem 3 of the homework).

    python vae/vae.py                                   # train; defaults reproduce models/vae.pt
    python vae/vae.py --eval --load_path models/vae.pt  # write vae_generated_samples.pt + grid, score them

Model: q(z|x,y) = N(mu, diag(exp(z_logstd))^2) and p(x|z,y) = N(decoder(z,y), exp(recon_logstd)^2 I)
with a learned scalar `recon_logstd`; prior p(z) = N(0, I). The loss is the negative ELBO in nats
per image, -E_q[log p(x|z,y)] + KL(q(z|x,y) || p(z)), with the KL in closed form (Kingma &
Welling, 2014, appendix B). A learned decoder variance weighs the squared error by 1/(2 sigma^2)
with sigma fitted to the data (Rybkin et al., 2021, "calibrated decoders"), which gives far
sharper decoder means than a fixed sigma = 1 or a Bernoulli (BCE) decoder.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.checkpoint import half_state, load_checkpoint, load_state, save_checkpoint
from mnistgen.data import batches, load_mnist
from mnistgen.utils import (MODELS_DIR, REPO_ROOT, CsvLog, UserError, add_common_args, nonnegative_float, nonnegative_int,
                            pick_device, plot_curves, positive_float, positive_int, probability, run_cli,
                            save_image_grid, seed_everything)

__all__ = ["CVAE", "generate_samples", "load_vae", "negative_elbo", "one_hot", "report", "main", "try_scorer", "KIND",
           "DEFAULT_PATH", "DEFAULT_LOGDIR"]

KIND = "vae"
DEFAULT_PATH = MODELS_DIR / "vae.pt"
DEFAULT_LOGDIR = REPO_ROOT / "runs" / "vae"
LOG_2PI = math.log(2 * math.pi)
# sampling temperature of the shipped model (see README: what it costs in per-class FID)
TRAIN_TEMPERATURE = 0.8


class CVAE(nn.Module):
    """The starter's fixed architecture. The image (or latent) fc and the label fc are concatenated
    and passed through a ReLU before the trunk: without it the input fcs and the trunk's first
    Linear would compose into a single linear map, i.e. one hidden layer less."""

    def __init__(self, img_size=784, label_size=10, latent_size=100, hidden_size=256,
                 recon_logstd_init=-1.0, temperature=1.0):
        super().__init__()
        self.config = dict(img_size=img_size, label_size=label_size, latent_size=latent_size,
                           hidden_size=hidden_size, recon_logstd_init=recon_logstd_init, temperature=temperature)
        self.img_size, self.label_size, self.latent_size = img_size, label_size, latent_size
        # std of the prior draws inside `sample`; 1.0 = the true model, < 1 trades diversity for fidelity
        self.temperature = temperature
        # encoder q(z | x, y)
        self.encoder_img_fc = nn.Linear(img_size, hidden_size)
        self.encoder_label_fc = nn.Linear(label_size, hidden_size)
        self.encoder = nn.Sequential(nn.Linear(2 * hidden_size, 512), nn.ReLU(),
                                     nn.Linear(512, 512), nn.ReLU())
        self.z_mean = nn.Linear(512, latent_size)
        self.z_logstd = nn.Linear(512, latent_size)
        # decoder p(x | z, y)
        self.decoder_latent_fc = nn.Linear(latent_size, hidden_size)
        self.decoder_label_fc = nn.Linear(label_size, hidden_size)
        self.decoder = nn.Sequential(nn.Linear(2 * hidden_size, 512), nn.ReLU(),
                                     nn.Linear(512, 512), nn.ReLU(),
                                     nn.Linear(512, img_size), nn.Sigmoid())
        # log std of the Gaussian p(x|z,y), one scalar shared by all pixels: a per-pixel std would
        # shrink without bound on the always-black border pixels (their log-density -> +inf)
        self.recon_logstd = nn.Parameter(torch.tensor(float(recon_logstd_init)))

    def encode(self, img, label):
        """img (B, 1, 28, 28) or (B, 784), label one-hot (B, 10) -> (z mean, z log std), each (B, latent)."""
        h = torch.cat([self.encoder_img_fc(img.reshape(len(img), -1)), self.encoder_label_fc(label)], 1)
        h = self.encoder(F.relu(h))
        return self.z_mean(h), self.z_logstd(h)

    def decode(self, latent, label):
        """latent (B, latent), label one-hot (B, 10) -> decoder mean (B, 784) in [0, 1]."""
        h = torch.cat([self.decoder_latent_fc(latent), self.decoder_label_fc(label)], 1)
        return self.decoder(F.relu(h))

    def forward(self, img, label):
        """(reconstruction mean (B, 784), z mean, z log std) with z drawn by reparameterisation."""
        mean, logstd = self.encode(img, label)
        z = mean + logstd.exp() * torch.randn_like(mean)
        return self.decode(z, label), mean, logstd

    @torch.no_grad()
    def sample(self, latent, label):
        """Decoder means for prior draws `latent` (B, latent) and one-hot `label` (B, 10): (B, 1, 28, 28) in [0, 1]."""
        return self.decode(latent * self.temperature, label).reshape(-1, 1, 28, 28)


def kl_divergence(mean, logstd):
    """KL(N(mean, exp(logstd)^2) || N(0, I)) summed over latent dims: (B,)."""
    return 0.5 * (mean.pow(2) + (2 * logstd).exp() - 1).sum(1) - logstd.sum(1)


def gaussian_nll(x, recon, logstd):
    """-log N(x; recon, exp(logstd)^2) summed over pixels: (B,). x, recon (B, 784)."""
    return (0.5 * ((x - recon) * torch.exp(-logstd)).pow(2) + logstd + 0.5 * LOG_2PI).sum(1)


def negative_elbo(model, img, label, kl_weight=1.0):
    """(loss to minimise, dict of per-image means: nelbo, recon (nats), kl, mse). kl_weight < 1 only
    during warm-up; the reported `nelbo` is always the true negative ELBO (kl_weight 1)."""
    x = img.reshape(len(img), -1)
    recon, mean, logstd = model(x, label)
    nll = gaussian_nll(x, recon, model.recon_logstd)
    kl = kl_divergence(mean, logstd)
    loss = (nll + kl_weight * kl).mean()
    stats = dict(nelbo=(nll + kl).mean().item(), recon=nll.mean().item(), kl=kl.mean().item(),
                 mse=(x - recon).pow(2).mean().item())
    return loss, stats


def generate_samples(cvae, n_samples_per_class, device):
    cvae.eval()
    latent = torch.randn((n_samples_per_class * 10, cvae.latent_size), device=device)
    label = torch.eye(cvae.label_size, dtype=torch.float, device=device).repeat(n_samples_per_class, 1)
    imgs = cvae.sample(latent, label).cpu()
    label = torch.argmax(label, dim=-1).cpu()
    samples = dict(imgs=imgs, labels=label)
    return samples


def one_hot(labels, device):
    return F.one_hot(labels, 10).float().to(device)


@torch.no_grad()
def test_statistics(model, images, labels, device, batch_size=1000, active_threshold=0.01):
    """Test-set figures: negative ELBO, its reconstruction and KL terms (nats per image), the
    reconstruction MSE of the posterior mean, and the active latent units (Burda et al., 2016:
    units whose posterior mean varies across images, Var_x E_q[z_i] > threshold)."""
    model.eval()
    totals, means = dict(nelbo=0.0, recon=0.0, kl=0.0, mse=0.0), []
    for x, y in batches(images, labels, batch_size, shuffle=False):
        x, y = x.to(device).reshape(len(x), -1), one_hot(y, device)
        mean, logstd = model.encode(x, y)
        z = mean + logstd.exp() * torch.randn_like(mean)
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
        from classifier.model import get_scorer
        return get_scorer(device, data_root)
    except UserError:
        return None


def sample_check(model, scorer, per_class, device, seed=1234):
    """Accuracy and per-class FID of `per_class` x 10 samples from fixed latents (comparable across epochs)."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(per_class * 10, model.latent_size, generator=g).to(device)
    labels = torch.arange(10).repeat(per_class)
    imgs = model.sample(latent, one_hot(labels, device)).cpu()
    score = scorer.score(imgs, labels)
    return score["accuracy"], score["class_fid"]


def load_vae(path, device="cpu", temperature=None):
    ckpt = load_checkpoint(path, KIND, names=("vae.pt", "last.pt"))
    config = dict(ckpt["config"])
    if temperature is not None:
        config["temperature"] = temperature
    model = CVAE(**config)
    load_state(model, ckpt["model"], path)
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------ training

def kl_weight_at(epoch_float, warmup_epochs):
    """Linear KL warm-up (Bowman et al., 2016; Sonderby et al., 2016): 0 -> 1 over `warmup_epochs`."""
    return 1.0 if warmup_epochs <= 0 else min(1.0, epoch_float / warmup_epochs)


def train(args, device):
    t0 = time.time()
    logdir = Path(args.logdir)
    train_x, train_y = load_mnist(train=True, data_root=args.data_root)
    test_x, test_y = load_mnist(train=False, data_root=args.data_root)
    if args.limit:
        train_x, train_y, test_x, test_y = train_x[:args.limit], train_y[:args.limit], test_x[:args.limit], test_y[:args.limit]
    temperature = TRAIN_TEMPERATURE if args.temperature is None else args.temperature
    model = CVAE(28 * 28, 10, 100, recon_logstd_init=args.recon_logstd_init, temperature=temperature).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = -(-len(train_x) // args.batch_size)
    total_steps = args.num_epochs * steps_per_epoch
    # cosine decay to 5% of the peak rate: the last epochs average out the gradient noise
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    data_gen = torch.Generator().manual_seed(args.seed)
    state = dict(epoch=0, wall=0.0)
    last_path, log = logdir / "last.pt", CsvLog(logdir / "log.csv")
    if args.resume:
        ckpt = load_checkpoint(last_path, KIND)
        load_state(model, ckpt["model"], last_path)
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        data_gen.set_state(ckpt["data_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        state.update(ckpt["state"])
        rows = [r for r in log.rows() if int(r["epoch"]) <= state["epoch"]]  # drop rows of an unsaved epoch
        log.path.unlink(missing_ok=True)
        for r in rows:
            log.write(**r)
        print(f"resumed from {last_path} after epoch {state['epoch']}")
    else:
        log.path.unlink(missing_ok=True)  # a fresh run starts a fresh log
    scorer = try_scorer(device, args.data_root) if args.check_per_class else None
    if scorer is None:
        print("per-epoch sample checks off (no classifier checkpoint or --check_per_class 0): the last epoch is kept")
    grid_latent = torch.randn(100, model.latent_size, generator=torch.Generator().manual_seed(0)).to(device)
    grid_label = one_hot(torch.arange(10).repeat(10), device)  # row-major 10x10: column c = class c

    for epoch in range(state["epoch"] + 1, args.num_epochs + 1):
        start = time.time()
        model.train()
        sums, n = dict(nelbo=0.0, recon=0.0, kl=0.0, mse=0.0), 0
        bar = tqdm(batches(train_x, train_y, args.batch_size, generator=data_gen), total=steps_per_epoch,
                   desc=f"epoch {epoch}/{args.num_epochs}", leave=False)
        for i, (x, y) in enumerate(bar):
            beta = kl_weight_at(epoch - 1 + i / steps_per_epoch, args.kl_warmup)
            loss, stats = negative_elbo(model, x.to(device), one_hot(y, device), kl_weight=beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k in sums:
                sums[k] += stats[k] * len(x)
            n += len(x)
            bar.set_postfix(nelbo=f"{stats['nelbo']:.1f}", kl=f"{stats['kl']:.1f}",
                            logstd=f"{model.recon_logstd.item():.3f}", refresh=False)
        state["wall"] += time.time() - start
        test = test_statistics(model, test_x, test_y, device)
        row = dict(epoch=epoch, train_nelbo=sums["nelbo"] / n, train_recon=sums["recon"] / n, train_kl=sums["kl"] / n,
                   test_nelbo=test["nelbo"], test_recon=test["recon"], test_kl=test["kl"], test_mse=test["mse"],
                   active_units=test["active_units"], recon_logstd=model.recon_logstd.item(),
                   lr=opt.param_groups[0]["lr"], check_acc="", check_class_fid="", wall_s=round(state["wall"], 1))
        if scorer is not None:
            row["check_acc"], row["check_class_fid"] = sample_check(model, scorer, args.check_per_class, device)
            save_checkpoint(logdir / "snapshots" / f"epoch_{epoch:03d}.pt", KIND, model.config,
                            model=half_state(model.state_dict()), epoch=epoch)
        log.write(**row)
        state["epoch"] = epoch
        save_image_grid(model.sample(grid_latent, grid_label), logdir / "grids" / f"epoch_{epoch:03d}.png")
        plot_curves(log.rows(), "epoch", {"negative ELBO (nats)": ["train_nelbo", "test_nelbo"],
                                          "terms (nats)": ["test_recon", "test_kl"],
                                          "recon_logstd": ["recon_logstd"],
                                          "sample check: per-class FID": ["check_class_fid"]}, logdir / "curves.png")
        save_checkpoint(last_path, KIND, model.config, model=model.state_dict(), optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(), data_rng=data_gen.get_state(), torch_rng=torch.get_rng_state(),
                        state=state)
        check = (f"  check acc {100 * row['check_acc']:.2f}% class-FID {row['check_class_fid']:.2f}"
                 if scorer is not None else "")
        print(f"epoch {epoch}: train -ELBO {row['train_nelbo']:.1f}  test -ELBO {test['nelbo']:.1f} "
              f"(recon {test['recon']:.1f}, KL {test['kl']:.1f})  MSE {test['mse']:.4f}  "
              f"active {test['active_units']}  logstd {row['recon_logstd']:.3f}{check}  [{state['wall']:.0f} s]",
              flush=True)

    epoch = select_epoch(model, log.rows(), scorer, logdir, args, device) if scorer is not None else state["epoch"]
    if args.save_path:
        save_checkpoint(args.save_path, KIND, model.config, model=half_state(model.state_dict()), epoch=epoch)
        print(f"saved epoch {epoch} weights (fp16) to {args.save_path}; training loop {state['wall']:.0f} s, "
              f"whole command {time.time() - t0:.0f} s")
    return model


def select_epoch(model, rows, scorer, logdir, args, device):
    """Load into `model` the epoch to ship and return its number. Finalists: the `--finalists` epochs
    with the lowest per-epoch check per-class FID, plus the last epoch. Each is re-scored on exactly
    what --eval produces (10,000 samples, seed --seed, fp16 weights, the model's temperature); the
    winner has the lowest per-class FID among those with accuracy >= --min_accuracy, or, when none
    qualifies, the highest accuracy."""
    rows = [r for r in rows if r["check_acc"] not in ("", None)]
    if not rows:
        return args.num_epochs
    ranked = sorted(rows, key=lambda r: float(r["check_class_fid"]))[:args.finalists]
    finalists = sorted({int(r["epoch"]) for r in ranked} | {int(rows[-1]["epoch"])})
    scores = {}
    for epoch in finalists:
        path = logdir / "snapshots" / f"epoch_{epoch:03d}.pt"
        load_state(model, load_checkpoint(path, KIND)["model"], path)
        model.eval()
        seed_everything(args.seed)
        samples = generate_samples(model, 1000, device)
        score = scorer.score(samples["imgs"], samples["labels"])
        scores[epoch] = (score["accuracy"], score["class_fid"])
        print(f"finalist epoch {epoch} (temperature {model.temperature}): 10,000 samples: accuracy "
              f"{100 * score['accuracy']:.2f}%  per-class FID {score['class_fid']:.3f}", flush=True)
    eligible = [e for e in finalists if scores[e][0] >= args.min_accuracy]
    epoch = (min(eligible, key=lambda e: scores[e][1]) if eligible else max(finalists, key=lambda e: scores[e][0]))
    path = logdir / "snapshots" / f"epoch_{epoch:03d}.pt"
    load_state(model, load_checkpoint(path, KIND)["model"], path)
    return epoch


# ------------------------------------------------------------------------------------------ evaluation

def evaluate(args, device):
    model = load_vae(args.load_path, device, temperature=args.temperature)
    seed_everything(args.seed)
    samples = generate_samples(model, 1000, device)
    torch.save(samples, args.samples_path)
    save_image_grid(samples["imgs"][:100], args.grid_path)
    print(f"wrote {args.samples_path} ({len(samples['imgs'])} samples, 1000 per class) and {args.grid_path}")
    test_x, test_y = load_mnist(train=False, data_root=args.data_root)
    torch.manual_seed(args.seed)
    stats = test_statistics(model, test_x, test_y, device)
    print(f"test set: -ELBO {stats['nelbo']:.2f} nats (reconstruction {stats['recon']:.2f}, KL {stats['kl']:.2f}), "
          f"reconstruction MSE {stats['mse']:.5f}, active units {stats['active_units']}/{model.latent_size}, "
          f"recon_logstd {model.recon_logstd.item():.3f}, temperature {model.temperature}")
    scorer = try_scorer(device, args.data_root)
    if scorer is None:
        print("classifier checkpoint models/classifier.pt not found: accuracy and FID skipped")
        return samples
    from classifier.model import format_score, reference_scores
    print("samples\n  " + format_score(scorer.score(samples["imgs"], samples["labels"])))
    refs = reference_scores(scorer, args.data_root)
    print("reference: 10,000 real training images (floor)\n  " + format_score(refs["real"]))
    print("reference: collapsed (10 test images per class, each x100)\n  " + format_score(refs["collapsed"]))
    return samples


def report(device, data_root=None):
    """Rows for the main job's table: figures of the shipped models/vae.pt on 10,000 samples."""
    from classifier.model import get_scorer, reference_scores
    model = load_vae(DEFAULT_PATH, device)
    torch.manual_seed(42)
    samples = generate_samples(model, 1000, device)
    scorer = get_scorer(device, data_root)
    score = scorer.score(samples["imgs"], samples["labels"])
    refs = reference_scores(scorer, data_root)
    floor, collapsed = refs["real"]["class_fid"], refs["collapsed"]["class_fid"]
    return [
        ("VAE accuracy (10k samples)", f"{100 * score['accuracy']:.2f}%", ">= 99.0% (aim 99.5%)"),
        ("VAE per-class FID", f"{score['class_fid']:.2f} (floor {floor:.2f}, collapsed {collapsed:.2f})",
         f"< collapsed; aim <= 4x floor ({4 * floor:.2f})"),
    ]


def parse_args(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    p.add_argument("--dataset", default="mnist", choices=["mnist"], help="dataset (default: mnist, the only one)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak Adam learning rate, cosine-decayed to 5%% (default: 1e-3)")
    p.add_argument("--batch_size", type=positive_int, default=128, help="mini-batch size (default: 128)")
    p.add_argument("--num_epochs", type=positive_int, default=70, help="training epochs (default: 70)")
    p.add_argument("--kl_warmup", type=nonnegative_float, default=5.0,
                   help="epochs of linear KL warm-up from 0 to 1; 0 = none (default: 5)")
    p.add_argument("--recon_logstd_init", type=float, default=-1.0,
                   help="initial log std of p(x|z,y), then learned (default: -1)")
    p.add_argument("--check_per_class", type=nonnegative_int, default=100,
                   help="samples per class scored by the classifier after each epoch to pick the shipped epoch; "
                        "0 = off (default: 100)")
    p.add_argument("--min_accuracy", type=probability, default=0.99,
                   help="a finalist is eligible for shipping when the accuracy of its 10,000 samples reaches this "
                        "(default: 0.99)")
    p.add_argument("--finalists", type=positive_int, default=3,
                   help="epochs with the lowest check per-class FID re-scored (with the last epoch) on 10,000 "
                        "samples at the end to pick the shipped one (default: 3)")
    p.add_argument("--logdir", default=str(DEFAULT_LOGDIR),
                   help="log.csv, curves.png, grids/, snapshots/ (fp16 weights per epoch) and last.pt "
                        "(for --resume) (default: runs/vae)")
    p.add_argument("--resume", action="store_true", help="continue the run in --logdir from its last.pt")
    p.add_argument("--save_path", default=str(DEFAULT_PATH),
                   help="where training writes the chosen epoch's fp16 weights (default: models/vae.pt)")
    p.add_argument("--limit", type=positive_int, default=None, help="use the first N train/test images only (smoke runs)")
    p.add_argument("--eval", action="store_true", help="sample and score --load_path instead of training")
    p.add_argument("--load_path", default=str(DEFAULT_PATH), help="checkpoint for --eval (default: models/vae.pt)")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="std of the prior draws inside sample, stored in the checkpoint's config; training: used by "
                        f"the per-epoch checks, grids and the shipped model (default: {TRAIN_TEMPERATURE}); --eval: "
                        "overrides the checkpoint's value (default: the checkpoint's)")
    p.add_argument("--samples_path", default="vae_generated_samples.pt",
                   help="--eval output, relative to the current directory (default: vae_generated_samples.pt)")
    p.add_argument("--grid_path", default=str(REPO_ROOT / "figures" / "vae_grid.png"),
                   help="--eval 10x10 grid, column c = class c (default: figures/vae_grid.png)")
    return p.parse_args(argv)


@run_cli
def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    if args.eval:
        return evaluate(args, device)
    seed_everything(args.seed)
    return train(args, device)


if __name__ == "__main__":
    main()
