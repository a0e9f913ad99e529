"""The GAN's training through the shared scaffold: `GanTask`.

    python gan/train.py [flags]    # the same as `python gan/gan.py [flags]` (the starter's command), without --eval
"""
import copy
import shutil
import sys
from pathlib import Path

import torch

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.model import get_scorer
from gan.evaluate import classifier_shipped, fixed_eval_samples, recalibrate_bn, seeded_samples
from gan.gan import (BETAS, HIDDEN_SIZE, IMG_DIM, KIND, LABEL_DIM, LATENT_DIM, GANConfig, add_train_args, build,
                     build_discriminator, d_loss_fn, g_loss_fn, load, new_parser, one_hot)
from mnistgen.checkpoint import half_state, load_state
from mnistgen.data import batches, load_mnist
from mnistgen.files import atomic_write
from mnistgen.training import Task, fit, run_options
from mnistgen.utils import UserError, pick_device, run_cli, save_image_grid, seed_everything


def lr_decay_epochs(args):
    """--lr_decay_epochs, by default the second half of --num_epochs (the shipped run: the last 15 of 30)."""
    return args.num_epochs // 2 if args.lr_decay_epochs is None else args.lr_decay_epochs


def check_args(args):
    """Training flags that contradict each other: a one-line error before anything is loaded."""
    if lr_decay_epochs(args) > args.num_epochs:
        raise UserError(f"--lr_decay_epochs must be between 0 and --num_epochs ({args.num_epochs})")
    if args.limit is not None and args.limit < args.batch_size:
        raise UserError(f"--limit ({args.limit}) must be at least --batch_size ({args.batch_size})")
    if args.eval_samples % 10 or args.eval_samples < 20:
        raise UserError("--eval_samples must be a multiple of 10, at least 20 (a per-class FID needs two per class)")


def epoch_rank(score, min_accuracy):
    """Keep-the-best key, lower is better: epochs at >= min_accuracy come first, the lowest per-class FID
    among them; before any epoch reaches min_accuracy, the most accurate one."""
    if score["accuracy"] >= min_accuracy:
        return (0, score["class_fid"])
    return (1, -score["accuracy"])


CURVE_PANELS = {"losses": ["d_loss", "g_loss"], "discriminator": ["d_real", "d_fake"],
                "accuracy (1,000 samples)": ["accuracy"], "per-class FID (1,000 samples)": ["class_fid"]}


class GanTask(Task):
    """One step = one D update (x d_steps, on the same real batch) then one G update on the first fake
    batch (as in the DCGAN example, it is generated once), then the EMA update of G's weights. After
    every epoch the EMA generator's BN statistics are recomputed and, when the classifier is shipped
    (`scored`), it is scored on fixed latents; the shipped checkpoint is the best epoch's EMA generator
    ('g') and discriminator ('d')."""
    kind = KIND

    def __init__(self, config, args, images, labels, device, scored=True):
        self.config, self.args, self.device, self.scored = config, args, device, scored
        self.images, self.labels = images * 2 - 1, labels  # the generator's tanh range
        self.steps_per_epoch = len(images) // args.batch_size
        self.decay_epochs = lr_decay_epochs(args)
        self.g, self.d = build(config).to(device), build_discriminator(config).to(device)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        self.modules = dict(g=self.g, d=self.d)
        self.optimizers = {name: torch.optim.Adam(net.parameters(), lr=args.lr, betas=BETAS)
                           for name, net in self.modules.items()}
        self.curve_panels = CURVE_PANELS if scored else {k: CURVE_PANELS[k] for k in ("losses", "discriminator")}

    def batches(self, epoch, generator):
        return batches(self.images, self.labels, self.args.batch_size, generator=generator, drop_last=True)

    def fake(self, labels):
        z = torch.randn(len(labels), self.g.latent_dim, device=self.device)
        return self.g(z, one_hot(labels, self.g.label_dim))

    # homework: the training step (D update, then G update)
    def train_step(self, batch):
        real, labels = (t.to(self.device) for t in batch)
        args, n_labels = self.args, self.d.label_dim
        self.g.train(), self.d.train()
        y = one_hot(labels, n_labels)
        fake = self.fake(labels)
        for k in range(args.d_steps):
            fake_k = fake.detach() if k == 0 else self.fake(labels).detach()
            d_real, d_fake = self.d(real, y), self.d(fake_k, y)  # separate batches: D's BN sees pure batches
            d_wrong = None
            if args.mismatch > 0:  # real images with a label shifted by 1..9: always wrong
                wrong = (labels + torch.randint_like(labels, 1, n_labels)) % n_labels
                d_wrong = self.d(real, one_hot(wrong, n_labels))
            d_loss = d_loss_fn(d_real, d_fake, 1.0 - args.label_smoothing, d_wrong, args.mismatch)
            self.optimizers["d"].zero_grad(set_to_none=True)
            d_loss.backward()
            self.optimizers["d"].step()
        self.d.requires_grad_(False)  # G step: gradients flow through D, D's weight gradients are not needed
        g_loss = g_loss_fn(self.d(fake, y))
        self.optimizers["g"].zero_grad(set_to_none=True)
        g_loss.backward()
        self.optimizers["g"].step()
        self.d.requires_grad_(True)
        self.update_ema()
        return dict(d_loss=d_loss.item(), g_loss=g_loss.item(), d_real=d_real.mean().item(),
                    d_fake=d_fake.mean().item())

    @torch.no_grad()
    def update_ema(self):
        updates = self.step + 1  # this step's update included
        decay = min(self.args.ema_decay, (1 + updates) / (10 + updates))  # short warm-up
        for p_ema, p in zip(self.g_ema.parameters(), self.g.parameters()):
            p_ema.lerp_(p, 1 - decay)

    def lr_scale(self, step):
        """Constant, then a linear decay towards 0 over the last --lr_decay_epochs epochs."""
        epoch, epochs, decay = step // self.steps_per_epoch, self.args.num_epochs, self.decay_epochs
        return 1.0 if epoch < epochs - decay else (epochs - epoch) / (decay + 1)

    def evaluate(self, step, run_dir):
        recalibrate_bn(self.g_ema, self.device)
        metrics = {}
        if self.scored:
            imgs, labels = fixed_eval_samples(self.g_ema, self.args.eval_samples // 10, self.device)
            with torch.random.fork_rng():  # the first call builds the scorer, whose CNN draws an initialisation
                score = get_scorer(self.device, self.args.data_root).score(imgs, labels)
            metrics = dict(accuracy=score["accuracy"], class_fid=score["class_fid"], fid=score["fid"])
        else:
            imgs = fixed_eval_samples(self.g_ema, 10, self.device)[0]
        epoch = -(-step // self.steps_per_epoch)
        save_image_grid(imgs[:100], Path(run_dir) / f"grid_epoch{epoch:03d}.png")
        return metrics

    def rank(self, metrics):
        return epoch_rank(metrics, self.args.min_accuracy) if metrics else None  # no classifier: keep the last

    def shipped_state(self):
        """The EMA generator (its BN statistics were just recomputed by `evaluate`) and the discriminator."""
        return dict(g=half_state(self.g_ema.state_dict()), d=half_state(self.d.state_dict()))

    def extra_state(self):
        return dict(g_ema=self.g_ema.state_dict())

    def load_extra_state(self, state):
        load_state(self.g_ema, state["g_ema"])

    def write_figures(self, shipped_path, run_dir, figures_dir):
        with atomic_write(figures_dir / "gan_curves.png") as tmp:
            shutil.copyfile(Path(run_dir) / "curves.png", tmp)
        samples = seeded_samples(load(shipped_path, self.device), self.args.seed, self.device)
        save_image_grid(samples["imgs"][:100], figures_dir / "gan_grid.png")


def train(args, device):
    check_args(args)
    truncation = GANConfig.truncation if args.truncation is None else args.truncation
    config = GANConfig(LATENT_DIM, LABEL_DIM, IMG_DIM, HIDDEN_SIZE, truncation)
    images, labels = load_mnist(train=True, data_root=args.data_root)
    scored = classifier_shipped()
    if not scored:
        print("note: models/classifier.pt not found; no accuracy/FID per epoch, the last epoch is kept",
              file=sys.stderr)
    seed_everything(args.seed)  # the starter's protocol: initialisation and latents draw from the global RNG
    task = GanTask(config, args, images[:args.limit], labels[:args.limit], device, scored)
    return fit(task, run_options(args, KIND, args.num_epochs * task.steps_per_epoch, task.steps_per_epoch))


@run_cli
def main(argv=None):
    args = add_train_args(new_parser(__doc__)).parse_args(argv)
    return train(args, pick_device(args.device))


if __name__ == "__main__":
    main()
