"""Train the MNIST energy-based model, or evaluate its inpainting (`--play --load_dir PATH`).

Training:   python ebm/main.py                          (the shipped model's settings; --resume continues)
Inpainting: python ebm/main.py --play --load_dir models/ebm.pt
Samples:    python ebm/sample.py                        (unconditional samples and the classifier's view of them)
"""
import argparse
import dataclasses
import shutil
import sys
import time
from collections import deque
from pathlib import Path

import torch

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ebm.ebm import DEFAULT_PATH, KIND, EBMConfig, build, load
from ebm.protocol import VAL_IMAGES, evaluate_inpainting
from mnistgen.data import load_mnist
from mnistgen.files import atomic_write, ensure_writable
from mnistgen.training import StopEarly, Task, add_run_args, fit, run_options
from mnistgen.utils import (BATCH_SIZE_RANGE, REPO_ROOT, SEED_RANGE, CsvLog, UserError, add_common_args,
                            pick_device, plot_curves, positive_int, run_cli, save_image_grid, seed_everything, shown,
                            take_first)

EVAL_EVERY = 500   # steps between checks of the held-out inpainting MSE (the best check is shipped)
VAL_CHECK = 500    # held-out images of each check (of the VAL_IMAGES never trained on)
# Sampler collapse: the negatives stop looking like data (the buffer fills with noise) and the energy gap
# E(x-) - E(x+), small while sampling works, jumps by orders of magnitude within a few hundred steps and never
# comes back. The gap is averaged over GAP_WINDOW steps; above COLLAPSE_GAP the run rolls back at half the
# learning rate, and the state is only checkpointed while the average is below half of it.
GAP_WINDOW = 100
COLLAPSE_GAP = 0.03
ENERGY_PANELS = {"energy": ["e_pos", "e_neg"], "loss": ["loss"], "grad norm": ["grad_norm"]}
VAL_PANELS = {"held-out inpainting MSE": ["val_mse"]}
PLAY_FIGURE = REPO_ROOT / "ebm_inpainting.png"  # --play's picture (git-ignored), wherever the command runs


def optional_proj_norm(text):
    """--proj_norm: 'none' for no bound (the starter's default None), else a float in EBMConfig's range."""
    return None if text.lower() == "none" else EBMConfig.RANGES["proj_norm"](text)


def build_parser():
    c, accepted = EBMConfig, EBMConfig.RANGES  # the flags of config fields take the fields' ranges
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=SEED_RANGE, default=42, help="seed of training and of the --play noise (default: 42)")
    p.add_argument("--play", action="store_true", help="evaluate the inpainting of --load_dir instead of training")
    p.add_argument("--load_dir", default=str(DEFAULT_PATH),
                   help="--play: checkpoint file, or a folder holding ebm.pt / shipped.pt / best.pt "
                        f"(default: {shown(DEFAULT_PATH)})")
    p.add_argument("--batch_size", type=BATCH_SIZE_RANGE, default=128, help="training batch size (default: 128)")
    p.add_argument("--buffer_size", type=accepted["buffer_size"], default=c.buffer_size,
                   help=f"replay buffer capacity (default: {c.buffer_size})")
    p.add_argument("--langevin_k", type=accepted["langevin_k"], default=c.langevin_k,
                   help=f"Langevin steps per negative (default: {c.langevin_k})")
    p.add_argument("--langevin_noise_std", type=accepted["langevin_noise_std"], default=c.langevin_noise_std,
                   help=f"std of the Langevin noise per step (default: {c.langevin_noise_std})")
    p.add_argument("--langevin_lr", type=accepted["langevin_lr"], default=c.langevin_lr,
                   help=f"Langevin step size (default: {c.langevin_lr:g})")
    p.add_argument("--replay_p", type=accepted["replay_p"], default=c.replay_p,
                   help=f"probability a negative restarts from the replay buffer, else U(0,1) noise "
                        f"(default: {c.replay_p})")
    p.add_argument("--lr", type=accepted["lr"], default=c.lr,
                   help=f"Adam learning rate, betas (0, 0.999) (default: {c.lr:g})")
    p.add_argument("--l2_coef", type=accepted["l2_coef"], default=c.l2_coef,
                   help=f"alpha of the regulariser alpha*(E(x+)^2 + E(x-)^2) (default: {c.l2_coef:g})")
    p.add_argument("--proj_norm", type=optional_proj_norm, default=c.proj_norm,
                   help=f"clip each pixel's Langevin gradient to [-proj_norm, proj_norm]; 'none' = no clip "
                        f"(default: {c.proj_norm})")
    p.add_argument("--inpaint_neg_p", type=accepted["inpaint_neg_p"], default=c.inpaint_neg_p,
                   help="fraction of negatives started from row-corrupted training images, Langevin on the corrupted "
                        f"rows only (task-aware CD; 0 = plain IGEBM; default: {c.inpaint_neg_p})")
    add_run_args(p, logdir="runs/ebm", save_path="models/ebm.pt", epochs=40)
    p.add_argument("--num_images", type=positive_int, default=None,
                   help="--play: the first N test images only (default: all 10,000)")
    p.add_argument("--figure", default=str(PLAY_FIGURE),
                   help=f"--play: PNG of originals / corrupted / recovered (default: {shown(PLAY_FIGURE)} in the "
                        "repository)")
    return add_common_args(p)


def mse_line(mse):
    return (f"mean mse {mse.mean().item():.6f} std {mse.std(unbiased=False).item():.6f} "
            f"max {mse.max().item():.6f} min {mse.min().item():.6f}")


# homework: the --play protocol (inpainting of the corrupted test images, MSE statistics)
def play(args, device):
    """The assignment's protocol on the test set; the inpainting settings are the checkpoint's."""
    figure = ensure_writable(args.figure, "--figure")
    images = take_first(load_mnist(train=False, data_root=args.data_root)[0], args.num_images, "test images")
    trainer = load(args.load_dir, device)
    print(f"inpainting {len(images)} test images: " + ", ".join(f"{k}={v}" for k, v in trainer.inpaint_config.items()))
    start = time.time()
    res = evaluate_inpainting(trainer, images, seed=args.seed, progress=True)
    print(mse_line(res["mse"]) + "  (recovered by the EBM)")
    print(mse_line(res["mse_corrupted"]) + "  (corrupted input)")
    print(mse_line(res["mse_interpolation"]) + "  (row interpolation baseline)")
    print(f"inpainting time {time.time() - start:.1f}s")
    n = min(10, len(images))
    grid = torch.cat([images[:n], res["corrupted"][:n], res["recovered"][:n]])
    print(f"figure: {shown(save_image_grid(grid, figure, nrow=n))}")
    return res


# ---------------------------------------------------------------------------------------------- training
class SamplerCollapsed(StopEarly):
    """The negatives stopped looking like data (see GAP_WINDOW); the weights themselves are finite, so after
    the last rollback training stops early and ships its best weights."""


class EBMTask(Task):
    """Contrastive divergence through the scaffold: one step is `Trainer.train_step` on a batch, plus the
    sampler-collapse guard; evaluation is the held-out inpainting MSE; the replay buffer is resumable state."""
    kind = KIND
    curve_panels = {**ENERGY_PANELS, **VAL_PANELS}

    def __init__(self, trainer, train_images, val_images, batch_size, gap_window=GAP_WINDOW, collapse_gap=COLLAPSE_GAP):
        self.trainer, self.config = trainer, trainer.config()
        self.modules, self.optimizers = {"model": trainer.model}, {"adam": trainer.optimizer}
        self.images, self.val_images, self.batch_size = train_images, val_images, batch_size
        self.steps_per_epoch = len(train_images) // batch_size
        if self.steps_per_epoch == 0:
            raise UserError(f"--batch_size {batch_size} is larger than the {len(train_images)} training images")
        self.gaps, self.collapse_gap = deque(maxlen=gap_window), collapse_gap  # E(x-) - E(x+) of the last steps

    def batches(self, epoch, generator):
        order = torch.randperm(len(self.images), generator=generator)
        b = self.batch_size
        return (self.images[order[i * b:(i + 1) * b]] for i in range(self.steps_per_epoch))

    def mean_gap(self):
        """E(x-) - E(x+) averaged over the last GAP_WINDOW steps; 0 until the window is full (the gap of the
        first steps, before the sampler works at all, says nothing about a collapse)."""
        return sum(self.gaps) / len(self.gaps) if len(self.gaps) == self.gaps.maxlen else 0.0

    def train_step(self, batch):
        stats = self.trainer.train_step(batch)  # raises TrainingDiverged on NaN/huge energies
        self.gaps.append(stats["e_neg"] - stats["e_pos"])
        if self.mean_gap() > self.collapse_gap:
            raise SamplerCollapsed(f"sampler collapsed (E(x-) - E(x+) averaged {self.mean_gap():.3f} over "
                                   f"{self.gaps.maxlen} steps, limit {self.collapse_gap})")
        return stats

    def evaluate(self, step, run_dir):
        # the assignment asks to keep track of the negatives: one grid per check
        for name in (f"negatives_{step:06d}.png", "negatives.png"):
            save_image_grid(self.trainer.x_neg[:64], Path(run_dir) / name, nrow=8)
        return dict(val_mse=evaluate_inpainting(self.trainer, self.val_images, seed=0, batch_size=500)["mse"]
                    .mean().item())

    def rank(self, metrics):
        return metrics["val_mse"]

    def healthy(self):
        return self.mean_gap() <= self.collapse_gap / 2 and self.trainer.weights_finite()

    def shipped_state(self):
        return dict(model=self.trainer.model.state_dict())  # fp32: the shipped figures were measured with it

    def extra_state(self):
        buffer = self.trainer.replay_buffer
        return dict(replay_buffer=torch.stack(list(buffer)) if buffer else torch.zeros((0, *self.config.input_shape)))

    def load_extra_state(self, state):
        self.trainer.replay_buffer.clear()
        self.trainer.replay_buffer.extend(state["replay_buffer"].float().unbind(0))
        self.gaps.clear()  # after a rollback or a resume the window starts afresh

    def write_figures(self, shipped_path, run_dir, figures_dir):
        rows = CsvLog(Path(run_dir) / "log.csv").rows()
        for name, panels in [("ebm_curves.png", ENERGY_PANELS), ("ebm_val.png", VAL_PANELS)]:
            plotted = plot_curves(rows, "step", panels, Path(run_dir) / name, title="EBM training")
            with atomic_write(Path(figures_dir) / name) as tmp:
                shutil.copyfile(plotted, tmp)
        save_image_grid(self.trainer.x_neg[:64], Path(figures_dir) / "ebm_negatives.png", nrow=8)


def config_from_args(args):
    fields = {f.name for f in dataclasses.fields(EBMConfig)}
    return EBMConfig(**{k: v for k, v in vars(args).items() if k in fields})


def train(args, device):
    images = load_mnist(train=True, data_root=args.data_root)[0]
    trainer = build(config_from_args(args), device)
    task = EBMTask(trainer, images[:-VAL_IMAGES][:args.limit], images[-VAL_IMAGES:][:VAL_CHECK], args.batch_size)
    return fit(task, run_options(args, KIND, args.num_epochs * task.steps_per_epoch, EVAL_EVERY))


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    # The starter's protocol seeds the global generators: the model's initialisation, the negatives' noise
    # and the buffer picks draw from them (a --resume restores their state from last.pt).
    seed_everything(args.seed)
    device = pick_device(args.device)
    return play(args, device) if args.play else train(args, device)


if __name__ == "__main__":
    main()
