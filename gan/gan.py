"""Class-conditional GAN on MNIST (Problem 4): the starter's fixed MLP generator and discriminator,
their losses, the training loop, evaluation, and the main-job `report`.

Train:     python gan/gan.py                      (defaults = the shipped model; writes models/gan.pt)
Evaluate:  python gan/gan.py --eval --load_path models/gan.pt
           (writes gan_generated_samples.pt in the current directory, 1,000 samples per class,
           and figures/gan_grid.png; prints the classifier's accuracy and per-class FID)

Training tricks (none touches the layers or their initialisation): non-saturating generator loss,
one-sided label smoothing, an exponential moving average (EMA) of the generator's weights, a linear
learning-rate decay at the end, and batch-norm running statistics recomputed for the EMA weights
(`generate_samples` puts the generator in eval mode, so these statistics are what it samples with).
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.checkpoint import CheckpointError, half_state, load_checkpoint, load_state, save_checkpoint
from mnistgen.utils import (MODELS_DIR, REPO_ROOT, CsvLog, UserError, add_common_args, nonnegative_float,
                            pick_device, plot_curves, positive_float, positive_int, probability, run_cli,
                            save_image_grid, seed_everything)

__all__ = ["Generator", "Discriminator", "generate_samples", "d_loss_fn", "g_loss_fn", "GanTrainer",
           "recalibrate_bn", "is_better", "load_gan", "evaluate_generator", "report", "main",
           "KIND", "DEFAULT_PATH", "LATENT_DIM", "LABEL_DIM", "IMG_DIM"]

KIND = "gan"
DEFAULT_PATH = MODELS_DIR / "gan.pt"
DEFAULT_LOGDIR = REPO_ROOT / "runs" / "gan"
FIGURES_DIR = REPO_ROOT / "figures"
LATENT_DIM, LABEL_DIM, IMG_DIM = 100, 10, (1, 28, 28)
DEFAULT_TRUNCATION = 0.8  # see Generator.truncation and gan/README.md for what it costs and buys


def _init_normal(module, mean=0.0, std=0.02):
    """The starter's initialisation: every Linear weight ~ N(0, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean, std)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """G(z, y): z -> fc 256 -> BN -> ReLU; y -> fc 256 -> BN -> ReLU; concat (512) -> fc 512 -> BN -> ReLU
    -> fc 1024 -> BN -> ReLU -> fc 784 -> tanh, reshaped to img_dim. Layer names follow the starter so
    its `checkpoint['g']` loads into the starter's class."""

    def __init__(self, latent_dim, label_dim, img_dim, hidden_size=256):
        super().__init__()
        self.latent_dim, self.label_dim, self.hidden_size = latent_dim, label_dim, hidden_size
        self.img_dim = tuple(img_dim) if isinstance(img_dim, (tuple, list)) else (int(img_dim),)
        h = hidden_size
        self.latent_fc, self.latent_bn = nn.Linear(latent_dim, h), nn.BatchNorm1d(h)
        self.label_fc, self.label_bn = nn.Linear(label_dim, h), nn.BatchNorm1d(h)
        self.fc1, self.bn1 = nn.Linear(2 * h, 2 * h), nn.BatchNorm1d(2 * h)
        self.fc2, self.bn2 = nn.Linear(2 * h, 4 * h), nn.BatchNorm1d(4 * h)
        self.fc3 = nn.Linear(4 * h, int(np.prod(self.img_dim)))
        _init_normal(self)
        # Sampling truncation (BigGAN's "truncation trick" in its simplest form): `sample` scales z by
        # this factor, trading a little diversity for cleaner digits. A plain attribute, not a buffer,
        # so 'g' keeps exactly the starter's state_dict keys; checkpoints store it in their config.
        self.truncation = 1.0

    def forward(self, z, label):
        """z (B, latent_dim), one-hot label (B, label_dim) -> images (B, *img_dim) in [-1, 1]."""
        z = F.relu(self.latent_bn(self.latent_fc(z)))
        y = F.relu(self.label_bn(self.label_fc(label)))
        out = F.relu(self.bn1(self.fc1(torch.cat([z, y], dim=-1))))
        out = F.relu(self.bn2(self.fc2(out)))
        return torch.tanh(self.fc3(out)).reshape((-1,) + self.img_dim)

    def sample(self, z, label):
        """Images (B, C, H, W) in [0, 1] for latents z (B, latent_dim) and one-hot labels (B, label_dim);
        z is scaled by `self.truncation` first."""
        with torch.no_grad():
            return ((self.forward(z * self.truncation, label) + 1) / 2).clamp_(0, 1)


class Discriminator(nn.Module):
    """D(x, y) in (0, 1): x -> fc 1024 -> LeakyReLU(0.2); y -> fc 1024 -> LeakyReLU(0.2); concat (2048)
    -> fc 512 -> BN -> LeakyReLU(0.2) -> fc 256 -> BN -> LeakyReLU(0.2) -> fc 1 -> sigmoid, squeezed."""

    def __init__(self, label_dim, img_dim, hidden_size=256):
        super().__init__()
        self.label_dim, self.hidden_size = label_dim, hidden_size
        self.img_dim = tuple(img_dim) if isinstance(img_dim, (tuple, list)) else (int(img_dim),)
        h = hidden_size
        self.img_fc = nn.Linear(int(np.prod(self.img_dim)), 4 * h)
        self.label_fc = nn.Linear(label_dim, 4 * h)
        self.fc2, self.bn2 = nn.Linear(8 * h, 2 * h), nn.BatchNorm1d(2 * h)
        self.fc3, self.bn3 = nn.Linear(2 * h, h), nn.BatchNorm1d(h)
        self.fc4 = nn.Linear(h, 1)
        _init_normal(self)

    def forward(self, img, label):
        """img (B, ...) in [-1, 1], one-hot label (B, label_dim) -> D(x, y) (B,)."""
        x = F.leaky_relu(self.img_fc(torch.flatten(img, start_dim=1)), 0.2)
        y = F.leaky_relu(self.label_fc(label), 0.2)
        x = F.leaky_relu(self.bn2(self.fc2(torch.cat([x, y], dim=-1))), 0.2)
        x = F.leaky_relu(self.bn3(self.fc3(x)), 0.2)
        return torch.sigmoid(self.fc4(x)).squeeze(dim=-1)


#########################
####  DO NOT MODIFY  ####
def generate_samples(generator, n_samples_per_class, device):
    generator.eval()
    latent = torch.randn((n_samples_per_class * 10, generator.latent_dim), device=device)
    label = torch.eye(generator.label_dim, dtype=torch.float, device=device).repeat(n_samples_per_class, 1)
    imgs = generator.sample(latent, label).cpu()
    label = torch.argmax(label, dim=-1).cpu()
    samples = dict(imgs=imgs, labels=label)
    return samples
##########################


# ---------------------------------------------------------------- losses
def _bce(p, target):
    """Binary cross-entropy of probabilities p against a constant target; log clamped like F.binary_cross_entropy."""
    return -(target * p.clamp_min(1e-12).log() + (1 - target) * (1 - p).clamp_min(1e-12).log()).mean()


def d_loss_fn(d_real, d_fake, real_target=1.0, d_wrong=None, mismatch=0.0):
    """Discriminator loss -[t log D(x, y) + log(1 - D(G(z, y), y))]; real_target < 1 is one-sided label
    smoothing (Salimans et al., 2016, sec. 3.4). With d_wrong = D(x, y') for real images paired with wrong
    labels, `mismatch` * -log(1 - D(x, y')) teaches D to reject image/label mismatches (the matching-aware
    discriminator of Reed et al., 2016, sec. 4.1), which pushes G towards images of the asked class."""
    loss = _bce(d_real, real_target) + _bce(d_fake, 0.0)
    if d_wrong is not None and mismatch > 0:
        loss = loss + mismatch * _bce(d_wrong, 0.0)
    return loss


def g_loss_fn(d_fake):
    """Non-saturating generator loss -log D(G(z)) (Goodfellow et al., 2014, sec. 3)."""
    return _bce(d_fake, 1.0)


def one_hot(labels, n=LABEL_DIM):
    return F.one_hot(labels, n).float()


# ---------------------------------------------------------------- training
class GanTrainer:
    """Both nets, their Adam optimisers (the starter's betas (0.5, 0.999)) and the EMA generator."""

    def __init__(self, generator, discriminator, device, lr=2e-4, betas=(0.5, 0.999), ema_decay=0.999,
                 label_smoothing=0.0, d_steps=1, mismatch=0.0):
        self.g, self.d, self.device = generator.to(device), discriminator.to(device), device
        self.g_opt = torch.optim.Adam(self.g.parameters(), lr=lr, betas=betas)
        self.d_opt = torch.optim.Adam(self.d.parameters(), lr=lr, betas=betas)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        self.ema_decay, self.label_smoothing, self.d_steps = ema_decay, label_smoothing, d_steps
        self.mismatch = mismatch
        self.step = 0

    def set_lr(self, lr):
        for opt in (self.g_opt, self.d_opt):
            for group in opt.param_groups:
                group["lr"] = lr

    def fake(self, labels):
        z = torch.randn(len(labels), self.g.latent_dim, device=self.device)
        return self.g(z, one_hot(labels, self.g.label_dim))

    def train_step(self, real, labels):
        """One D update (x d_steps on the same real batch), then one G update on the first fake batch
        (as in the DCGAN example, the fake batch is generated once). real in [-1, 1], labels int (B,)."""
        self.g.train(), self.d.train()
        y = one_hot(labels, self.d.label_dim)
        fake = self.fake(labels)
        self.d.requires_grad_(True)
        for k in range(self.d_steps):
            fake_k = fake.detach() if k == 0 else self.fake(labels).detach()
            d_real, d_fake = self.d(real, y), self.d(fake_k, y)  # separate batches: D's BN sees pure batches
            d_wrong = None
            if self.mismatch > 0:  # real images with a label shifted by 1..9: always wrong
                wrong = (labels + torch.randint_like(labels, 1, self.d.label_dim)) % self.d.label_dim
                d_wrong = self.d(real, one_hot(wrong, self.d.label_dim))
            d_loss = d_loss_fn(d_real, d_fake, 1.0 - self.label_smoothing, d_wrong, self.mismatch)
            self.d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_opt.step()
        self.d.requires_grad_(False)  # G step: gradients flow through D, D's weight gradients are not needed
        g_loss = g_loss_fn(self.d(fake, y))
        self.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_opt.step()
        self.d.requires_grad_(True)
        self.update_ema()
        return dict(d_loss=d_loss.item(), g_loss=g_loss.item(), d_real=d_real.mean().item(),
                    d_fake=d_fake.mean().item())

    @torch.no_grad()
    def update_ema(self):
        self.step += 1
        decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))  # short warm-up
        for p_ema, p in zip(self.g_ema.parameters(), self.g.parameters()):
            p_ema.lerp_(p, 1 - decay)

    def state(self):
        return dict(g=self.g.state_dict(), d=self.d.state_dict(), g_ema=self.g_ema.state_dict(),
                    g_optimizer=self.g_opt.state_dict(), d_optimizer=self.d_opt.state_dict(), step=self.step)

    def load(self, state):
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.g_ema.load_state_dict(state["g_ema"])
        self.g_opt.load_state_dict(state["g_optimizer"])
        self.d_opt.load_state_dict(state["d_optimizer"])
        self.step = state["step"]


@torch.no_grad()
def recalibrate_bn(generator, device, n_batches=20, batch_size=1000, seed=0):
    """Recompute the generator's BN running statistics as exact averages over fresh batches of
    balanced labels (train-mode forward passes), so eval-mode sampling matches train-mode sampling."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    bns = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = plain mean over the batches below
    generator.train()
    eye = torch.eye(generator.label_dim, device=device)
    for _ in range(n_batches):
        z = torch.randn(batch_size, generator.latent_dim, generator=g).to(device)
        generator(z, eye.repeat(batch_size // generator.label_dim + 1, 1)[:batch_size])
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    return generator.eval()


def fixed_eval_samples(generator, n_per_class, device, seed=1234):
    """Eval-mode samples from fixed latents (so epochs are compared on the same z), classes 0..9 cycling."""
    generator.eval()
    z = torch.randn(10 * n_per_class, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    label = torch.eye(generator.label_dim).repeat(n_per_class, 1)
    imgs = torch.cat([generator.sample(zb.to(device), lb.to(device)).cpu()
                      for zb, lb in zip(z.split(1000), label.split(1000))])
    return imgs, label.argmax(1)


def evaluate_generator(generator, scorer, n_per_class, device, seed=1234):
    imgs, labels = fixed_eval_samples(generator, n_per_class, device, seed)
    return scorer.score(imgs, labels), imgs


def _try_scorer(device, data_root):
    from classifier.model import DEFAULT_PATH as CLASSIFIER_PATH, get_scorer
    if not CLASSIFIER_PATH.is_file():
        return None
    return get_scorer(device, data_root)


def config_of(g):
    return dict(latent_dim=g.latent_dim, label_dim=g.label_dim, img_dim=list(g.img_dim), hidden_size=g.hidden_size,
                truncation=g.truncation)


def save_shipped(path, trainer, config, fp16=True):
    """The shipped checkpoint: 'g' = the EMA generator with recalibrated BN statistics, 'd' = the
    discriminator; no optimiser states (eval does not need them)."""
    conv = half_state if fp16 else (lambda sd: sd)
    return save_checkpoint(path, KIND, config, g=conv(trainer.g_ema.state_dict()), d=conv(trainer.d.state_dict()))


def load_gan(path=DEFAULT_PATH, device="cpu"):
    """(generator in eval mode, discriminator, checkpoint) from a gan checkpoint (file or folder)."""
    ckpt = load_checkpoint(path, KIND, names=("gan.pt", "best.pt"))
    cfg = ckpt["config"]
    for key in ("g", "d"):
        if key not in ckpt:
            raise CheckpointError(f"{path} has no '{key}' entry")
    g = Generator(cfg["latent_dim"], cfg["label_dim"], tuple(cfg["img_dim"]), cfg["hidden_size"])
    d = Discriminator(cfg["label_dim"], tuple(cfg["img_dim"]), cfg["hidden_size"])
    load_state(g, ckpt["g"], path)
    load_state(d, ckpt["d"], path)
    g.truncation = float(cfg.get("truncation", 1.0))
    return g.to(device).eval(), d.to(device).eval(), ckpt


def lr_at(epoch, args):
    """Constant lr, then linear decay to 0 over the last `lr_decay_epochs` epochs (epoch is 0-based)."""
    start = args.num_epochs - args.lr_decay_epochs
    if epoch < start:
        return args.lr
    return args.lr * (args.num_epochs - epoch) / (args.lr_decay_epochs + 1)


def is_better(score, best, min_accuracy):
    """Among epochs at >= min_accuracy, lower per-class FID wins; before any reaches it, higher accuracy."""
    if best is None:
        return True
    ok, best_ok = score["accuracy"] >= min_accuracy, best["accuracy"] >= min_accuracy
    if ok != best_ok:
        return ok
    return score["class_fid"] < best["class_fid"] if ok else score["accuracy"] > best["accuracy"]


CURVE_PANELS = {"losses": ["d_loss", "g_loss"], "discriminator": ["d_real", "d_fake"],
                "accuracy (1,000 samples)": ["accuracy"], "per-class FID (1,000 samples)": ["class_fid"]}


def train(args, device):
    seed_everything(args.seed)
    from mnistgen.data import batches, load_mnist
    images, labels = load_mnist(train=True, data_root=args.data_root)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    images = images * 2 - 1  # the generator's tanh range
    logdir = Path(args.logdir) if args.logdir else DEFAULT_LOGDIR
    logdir.mkdir(parents=True, exist_ok=True)
    g, d = Generator(LATENT_DIM, LABEL_DIM, IMG_DIM), Discriminator(LABEL_DIM, IMG_DIM)
    g.truncation = DEFAULT_TRUNCATION if args.truncation is None else args.truncation
    config = config_of(g)
    trainer = GanTrainer(g, d, device, args.lr, (0.5, 0.999), args.ema_decay, args.label_smoothing, args.d_steps,
                         args.mismatch)
    log, last_path, start_epoch, best = CsvLog(logdir / "log.csv"), logdir / "last.pt", 0, None
    if args.resume:
        ckpt = load_checkpoint(last_path, KIND)
        trainer.load(ckpt)
        start_epoch, best = ckpt["epoch"], ckpt["best"]
        torch.set_rng_state(ckpt["rng"])
        kept = [r for r in log.rows() if int(r["epoch"]) <= start_epoch]  # drop rows of an unsaved epoch
        log.path.unlink(missing_ok=True)
        for r in kept:
            log.write(**r)
        print(f"resumed from {last_path} after epoch {start_epoch}", file=sys.stderr)
    elif log.path.exists():
        log.path.unlink()  # a fresh run starts a fresh log
    scorer = _try_scorer(device, args.data_root)
    if scorer is None:
        print("note: models/classifier.pt not found; no accuracy/FID per epoch, the last epoch is kept",
              file=sys.stderr)
    data_gen = torch.Generator().manual_seed(args.seed)
    for _ in range(start_epoch):
        torch.randperm(len(images), generator=data_gen)  # same data order as an uninterrupted run
    t0 = time.time()
    for epoch in range(start_epoch, args.num_epochs):
        trainer.set_lr(lr_at(epoch, args))
        sums, n = {}, 0
        bar = tqdm(batches(images, labels, args.batch_size, generator=data_gen, drop_last=True),
                   total=len(images) // args.batch_size, desc=f"epoch {epoch + 1}/{args.num_epochs}",
                   file=sys.stderr, mininterval=2, disable=args.no_progress)
        for x, y in bar:
            out = trainer.train_step(x.to(device), y.to(device))
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            bar.set_postfix(d=f"{out['d_loss']:.3f}", g=f"{out['g_loss']:.3f}", refresh=False)
        row = dict(epoch=epoch + 1, lr=lr_at(epoch, args), **{k: v / max(n, 1) for k, v in sums.items()})
        recalibrate_bn(trainer.g_ema, device)
        if scorer is not None:
            score, imgs = evaluate_generator(trainer.g_ema, scorer, args.eval_samples // 10, device)
            row.update(accuracy=score["accuracy"], class_fid=score["class_fid"], fid=score["fid"])
        else:
            score, imgs = None, fixed_eval_samples(trainer.g_ema, 10, device)[0]
        row["minutes"] = (time.time() - t0) / 60
        save_image_grid(imgs[:100], logdir / f"grid_epoch{epoch + 1:03d}.png", nrow=10)
        improved = score is None or is_better(score, best, args.min_accuracy)
        if improved:
            best = dict(score_summary(score), epoch=epoch + 1) if score else dict(epoch=epoch + 1)
            save_shipped(args.save_path, trainer, config)
            save_shipped(logdir / "best.pt", trainer, config)
        log.write(**{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        save_checkpoint(last_path, KIND, config, **trainer.state(), epoch=epoch + 1, best=best,
                        rng=torch.get_rng_state(), args=vars(args))
        plot_curves(log.rows(), "epoch", CURVE_PANELS if scorer else dict(list(CURVE_PANELS.items())[:2]),
                    logdir / "curves.png", title="conditional GAN")
        msg = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        print(msg + ("  * saved" if improved else ""), flush=True)
    (logdir / "summary.json").write_text(json.dumps(dict(best=best, args=vars(args)), indent=1, default=str))
    if args.figures_dir:
        plot_curves(log.rows(), "epoch", CURVE_PANELS if scorer else dict(list(CURVE_PANELS.items())[:2]),
                    Path(args.figures_dir) / "gan_curves.png", title="conditional GAN training")
    print(f"best epoch {best.get('epoch') if best else None}: {best}; shipped checkpoint {args.save_path}")
    return best


def score_summary(score):
    return dict(accuracy=score["accuracy"], class_fid=score["class_fid"], fid=score["fid"])


def evaluate(args, device):
    g, _, _ = load_gan(args.load_path or DEFAULT_PATH, device)
    if args.truncation is not None:
        g.truncation = args.truncation
    seed_everything(args.seed)
    samples = generate_samples(g, 1000, device)
    torch.save(samples, "gan_generated_samples.pt")
    print(f"wrote gan_generated_samples.pt ({len(samples['imgs'])} images, 1,000 per class)")
    if args.figures_dir:
        grid = save_image_grid(samples["imgs"][:100], Path(args.figures_dir) / "gan_grid.png", nrow=10)
        print(f"wrote {grid} (10x10, column = class)")
    scorer = _try_scorer(device, args.data_root)
    if scorer is None:
        print("models/classifier.pt not found: no scores", file=sys.stderr)
        return None
    from classifier.model import format_score, reference_scores
    score = scorer.score(samples["imgs"], samples["labels"])
    print("generated (eval mode)\n  " + format_score(score))
    print("  per-class FID: " + " ".join(f"{c}:{v:.2f}" for c, v in score["per_class_fid"].items()))
    train_mode = train_mode_samples(g, 1000, device, args.seed)
    print("same generator in train mode (batch statistics, batches of 1,000)\n  " +
          format_score(scorer.score(*train_mode)))
    if g.truncation != 1.0:
        print(f"same generator without truncation (z not scaled by {g.truncation})\n  " +
              format_score(untruncated_score(g, scorer, device, args.seed)))
    refs = reference_scores(scorer, args.data_root)
    print("reference: 10,000 real training images\n  " + format_score(refs["real"]))
    print("reference: collapsed (10 test images per class, each x100)\n  " + format_score(refs["collapsed"]))
    print(f"per-class FID / real floor = {score['class_fid'] / refs['real']['class_fid']:.2f}")
    return score


def untruncated_score(generator, scorer, device, seed):
    """Scores of 10,000 eval-mode samples with z unscaled (truncation 1), the generator left as it was."""
    truncation, generator.truncation = generator.truncation, 1.0
    try:
        return scorer.score(*fixed_eval_samples(generator, 1000, device, seed=seed))
    finally:
        generator.truncation = truncation


@torch.no_grad()
def train_mode_samples(generator, n_per_class, device, seed):
    """Samples with batch-norm batch statistics (a copy of the generator, so its buffers stay intact)."""
    g = copy.deepcopy(generator).train()
    torch.manual_seed(seed + 1)
    z = torch.randn(10 * n_per_class, g.latent_dim) * g.truncation
    label = torch.eye(g.label_dim).repeat(n_per_class, 1)
    imgs = torch.cat([((g(zb.to(device), lb.to(device)) + 1) / 2).clamp(0, 1).cpu()
                      for zb, lb in zip(z.split(1000), label.split(1000))])
    return imgs, label.argmax(1)


def report(device, data_root=None):
    """Main-job hook: figures of the shipped models/gan.pt on 10,000 samples (fixed seed)."""
    from classifier.model import get_scorer, reference_scores
    g, _, _ = load_gan(DEFAULT_PATH, device)
    seed_everything(42)
    samples = generate_samples(g, 1000, device)
    scorer = get_scorer(device, data_root)
    score = scorer.score(samples["imgs"], samples["labels"])
    refs = reference_scores(scorer, data_root)
    floor, collapsed = refs["real"]["class_fid"], refs["collapsed"]["class_fid"]
    worst = min(score["per_class_accuracy"].items(), key=lambda kv: kv[1])
    untruncated = untruncated_score(g, scorer, device, seed=42)
    return [
        (f"GAN accuracy (10,000 samples, z scale {g.truncation:g})", f"{100 * score['accuracy']:.2f}%",
         ">= 99.0% (aim 99.5%)"),
        ("GAN accuracy / per-class FID without truncation",
         f"{100 * untruncated['accuracy']:.2f}% / {untruncated['class_fid']:.2f}", "(for comparison)"),
        ("GAN weakest class accuracy", f"{worst[0]}: {100 * worst[1]:.1f}%", "(public solution: 8 at 89%)"),
        ("GAN per-class FID", f"{score['class_fid']:.2f} ({score['class_fid'] / floor:.1f}x floor {floor:.2f})",
         f"< collapsed {collapsed:.1f}; aim <= 4x floor"),
    ]


def build_parser():
    p = argparse.ArgumentParser(description="Class-conditional GAN on MNIST: train (default) or --eval.")
    p.add_argument("--seed", type=int, default=42, help="random seed of training and of --eval sampling (default: 42)")
    p.add_argument("--dataset", choices=["mnist"], default="mnist", help="dataset (only mnist; default: mnist)")
    p.add_argument("--lr", type=positive_float, default=2e-4, help="Adam learning rate of both nets, betas (0.5, 0.999) (default: 2e-4)")
    p.add_argument("--batch_size", type=positive_int, default=128, help="mini-batch size (default: 128)")
    p.add_argument("--num_epochs", type=positive_int, default=30, help="training epochs (default: 30)")
    p.add_argument("--lr_decay_epochs", type=int, default=15,
                   help="linear learning-rate decay towards 0 over this many final epochs; 0: constant (default: 15)")
    p.add_argument("--ema_decay", type=probability, default=0.999,
                   help="EMA decay of the generator weights that are evaluated and shipped; 0: no EMA (default: 0.999)")
    p.add_argument("--label_smoothing", type=probability, default=0.1,
                   help="one-sided label smoothing: D's target for real images is 1 - this (default: 0.1)")
    p.add_argument("--d_steps", type=positive_int, default=1, help="discriminator updates per generator update (default: 1)")
    p.add_argument("--mismatch", type=nonnegative_float, default=1.0,
                   help="weight of the matching-aware D term: real images with wrong labels count as fake (default: 1)")
    p.add_argument("--truncation", type=positive_float, default=None,
                   help=f"scale of z when sampling (truncation trick): training stores it in the checkpoint and uses it "
                        f"for the per-epoch scores (default {DEFAULT_TRUNCATION}); --eval overrides the checkpoint's value")
    p.add_argument("--eval_samples", type=positive_int, default=1000,
                   help="samples scored by the classifier after each epoch, a multiple of 10 (default: 1000)")
    p.add_argument("--min_accuracy", type=probability, default=0.99,
                   help="the kept checkpoint is the lowest per-class FID among epochs with at least this accuracy (default: 0.99)")
    p.add_argument("--logdir", default=None, help="CSV log, grids, curves, last.pt and best.pt (default: runs/gan)")
    p.add_argument("--save_path", default=str(DEFAULT_PATH), help="where training writes the best checkpoint (default: models/gan.pt)")
    p.add_argument("--resume", action="store_true", help="continue training from LOGDIR/last.pt (same flags as the interrupted run)")
    p.add_argument("--limit", type=positive_int, default=None, help="train on the first N training images only, for smoke tests (default: all 60,000)")
    p.add_argument("--figures_dir", default=str(FIGURES_DIR),
                   help="where the README figures go (gan_curves.png, gan_grid.png); '' to skip (default: figures/)")
    p.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--eval", action="store_true", help="write gan_generated_samples.pt (1,000 per class) from --load_path and score it")
    p.add_argument("--load_path", default=None, help="checkpoint to evaluate (default: models/gan.pt)")
    return add_common_args(p)


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.lr_decay_epochs < 0 or args.lr_decay_epochs > args.num_epochs:
        raise UserError(f"--lr_decay_epochs must be between 0 and --num_epochs ({args.num_epochs})")
    if args.limit is not None and args.limit < args.batch_size:
        raise UserError(f"--limit ({args.limit}) must be at least --batch_size ({args.batch_size})")
    if args.eval_samples % 10:
        raise UserError("--eval_samples must be a multiple of 10")
    device = pick_device(args.device)
    if args.eval:
        return evaluate(args, device)
    if args.load_path:
        raise UserError("--load_path is for --eval; use --resume to continue training")
    return train(args, device)


if __name__ == "__main__":
    main()
