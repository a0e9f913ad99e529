"""Energy-based model of MNIST digits (Problem 1): the MLP energy, contrastive divergence and inpainting.

The network outputs f(x); the energy is E(x) = -f(x) and the model density p(x) ∝ exp(-E(x)).
Training (IGEBM, Du & Mordatch 2019) alternates short-run Langevin sampling of negatives, started
from uniform noise or from a replay buffer of earlier negatives, with a contrastive-divergence update
that lowers E on data and raises it on negatives, plus the L2 term alpha * (E(x+)^2 + E(x-)^2).
Inpainting runs the same Langevin dynamics on the corrupted pixels only and averages several chains.
"""
import dataclasses
import math
import random
from collections import deque
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from mnistgen.checkpoint import load_model, save_checkpoint
from mnistgen.training import TrainingDiverged
from mnistgen.utils import LR_RANGE, MODELS_DIR, Range, UserError, check_ranges

__all__ = ["EBMConfig", "MlpBackbone", "Trainer", "TrainingDiverged", "build", "load", "row_corruption", "KIND",
           "CHECKPOINT_NAMES", "DEFAULT_PATH", "INPAINT_KEYS"]

KIND = "ebm"
DEFAULT_PATH = MODELS_DIR / "ebm.pt"
CHECKPOINT_NAMES = ("ebm.pt", "shipped.pt", "best.pt")  # looked for when a folder (e.g. a run folder) is given
INPAINT_KEYS = ("steps", "step_size", "noise_std", "chains", "grad_clip", "fidelity",  # `Trainer.inpainting`
                "start_mix", "start_mix_clipped", "shifts")


@dataclasses.dataclass
class EBMConfig:
    """Everything that rebuilds a Trainer, stored in every checkpoint. The defaults are the settings that
    trained the shipped model; the CLI reads them, the loader rebuilds from the stored dict.

    The inpaint_* fields are the Langevin settings of `Trainer.inpainting` (chosen on held-out training
    images with benchmarks/ebm_tune.py); benchmarks/ebm_export.py writes a checkpoint with other values."""
    input_shape: Tuple[int, ...] = (1, 28, 28)
    hidden_size: int = 512            # fixed by the starter
    buffer_size: int = 10000
    langevin_k: int = 20
    langevin_noise_std: float = 0.005
    langevin_lr: float = 10.0
    replay_p: float = 0.95
    lr: float = 1e-4
    l2_coef: float = 1.0
    proj_norm: Optional[float] = 0.01
    inpaint_neg_p: float = 0.75       # fraction of task negatives (see Trainer)
    inpaint_steps: int = 14
    inpaint_step_size: float = 15.0
    inpaint_noise_std: float = 0.0
    inpaint_chains: int = 1
    inpaint_grad_clip: float = 0.01   # inf: no clipping
    inpaint_fidelity: float = 0.0
    inpaint_start_mix: float = 0.5           # chains start at mix * observed + (1 - mix) * row interpolation ...
    inpaint_start_mix_clipped: float = 0.7   # ... with this mix where the observation was clipped to 0 or 1
    inpaint_shifts: Tuple[int, ...] = (0, 1, -1, 2, -2)  # horizontal shifts (pixels) the result is averaged over

    # The values each field accepts, checked for the flags (ebm/main.py) and for a checkpoint's config alike. Sizes
    # and steps are bounded so that a config cannot ask for terabytes or days; shifts stay within the 4-pixel margin
    # around MNIST's 20x20 digit box (a larger roll wraps strokes around the image: a far worse MSE).
    RANGES = dict(input_shape=Range(1, 64), hidden_size=Range(1, 4096), buffer_size=Range(1, 100000),
                  langevin_k=Range(1, 1000), langevin_noise_std=Range(0, 1, integer=False),
                  langevin_lr=Range(0, 1000, integer=False, low_open=True), replay_p=Range(0, 1, integer=False),
                  lr=LR_RANGE, l2_coef=Range(0, 1000, integer=False),
                  proj_norm=Range(0, math.inf, integer=False, low_open=True),
                  inpaint_neg_p=Range(0, 1, integer=False), inpaint_steps=Range(1, 10000),
                  inpaint_step_size=Range(0, 1000, integer=False), inpaint_noise_std=Range(0, 1, integer=False),
                  inpaint_chains=Range(1, 8), inpaint_grad_clip=Range(0, math.inf, integer=False, low_open=True),
                  inpaint_fidelity=Range(0, 1, integer=False), inpaint_start_mix=Range(0, 1, integer=False),
                  inpaint_start_mix_clipped=Range(0, 1, integer=False), inpaint_shifts=Range(-4, 4))

    def __post_init__(self):
        check_ranges(self, self.RANGES)
        if not self.inpaint_shifts or len(set(self.inpaint_shifts)) != len(self.inpaint_shifts):
            raise ValueError(f"inpaint_shifts must be distinct integers in [-4, 4], at least one, "
                             f"got {self.inpaint_shifts!r}")

    def inpainting(self):
        """The inpainting settings as `Trainer.inpaint_config` holds them: {steps: .., step_size: .., ...}."""
        return {key: getattr(self, f"inpaint_{key}") for key in INPAINT_KEYS}


def vertical_interpolation(x, mask):
    """Each masked pixel becomes the mean of its unmasked neighbours above and below (the one there is at
    the top and bottom rows; a masked pixel with none keeps its value). On the protocol's even rows this is
    the row-interpolation baseline."""
    known = (~mask).to(x.dtype)
    pad = torch.zeros_like(x[..., :1, :])
    above, above_known = torch.cat([pad, x[..., :-1, :]], -2), torch.cat([pad, known[..., :-1, :]], -2)
    below, below_known = torch.cat([x[..., 1:, :], pad], -2), torch.cat([known[..., 1:, :], pad], -2)
    count = above_known + below_known
    interp = (above * above_known + below * below_known) / count.clamp(min=1)
    return torch.where(mask & (count > 0), interp, x)


def chain_start(observed, mask, mix, mix_clipped):
    """Where the inpainting chains start: on masked pixels, mix * observed + (1 - mix) * interpolation.

    The noisy rows are observations, not just noise: y = clip(x + 0.3 n, 0, 1) is an unbiased but noisy
    reading where 0 < y < 1, while a reading of exactly 0 (or 1), as half the background pixels give, says
    x is near 0 (or 1) far more surely, hence its own, larger weight `mix_clipped`. mix = mix_clipped = 1
    starts at the corrupted image itself."""
    clipped = (observed <= 0) | (observed >= 1)
    weight = torch.where(clipped, torch.as_tensor(mix_clipped, dtype=observed.dtype),
                         torch.as_tensor(mix, dtype=observed.dtype))
    start = observed + (1 - weight) * (vertical_interpolation(observed, mask) - observed)
    return torch.where(mask, start, observed).clamp(0, 1)


def row_corruption(images, noise_std=0.3, generator=None):
    """The assignment's corruption: rows 0, 2, ..., 26 get N(0, noise_std^2) noise, clipped to [0, 1].
    Returns (corrupted, mask) with mask True on the corrupted rows."""
    mask = torch.zeros(images.shape, dtype=torch.bool, device=images.device)
    mask[..., 0::2, :] = True
    noise = torch.randn(images.shape, generator=generator).to(images.device)
    return torch.where(mask, images + noise_std * noise, images).clamp(0, 1), mask


# homework: the starter's fixed MLP energy network
class MlpBackbone(nn.Module):
    """f(x): flatten -> Linear(784, h) -> act -> Linear(h, h) -> act -> Linear(h, h) -> act -> Linear(h, 1)."""

    def __init__(self, input_shape, hidden_size, activation=nn.functional.leaky_relu):
        super().__init__()
        self.input_shape = tuple(input_shape)  # (C, H, W)
        self.hidden_size = hidden_size
        self.fc1 = nn.Linear(int(np.prod(self.input_shape)), hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)
        self.fc3 = nn.Linear(hidden_size, hidden_size)
        self.fc4 = nn.Linear(hidden_size, 1)
        self.activation = activation

    def forward(self, x):
        x = torch.flatten(x, start_dim=1)
        x = self.activation(self.fc1(x))
        x = self.activation(self.fc2(x))
        x = self.activation(self.fc3(x))
        return self.fc4(x)  # (B, 1): f(x) = -E(x)


class Trainer:
    """Contrastive-divergence trainer of an MlpBackbone.

    langevin_k / langevin_lr / langevin_noise_std: steps, step size and noise std of the sampler
      x <- clamp(x + langevin_lr * clip(grad_x f(x)) + N(0, langevin_noise_std^2), 0, 1).
    replay_p: probability that a negative chain restarts from the replay buffer instead of U(0, 1) noise.
    l2_coef: alpha of the regulariser alpha * (E(x+)^2 + E(x-)^2) that keeps energies near 0.
    proj_norm: radius of the L-infinity ball the Langevin gradient is projected onto, i.e. each
      pixel's gradient is clipped to [-proj_norm, proj_norm] (as in IGEBM); None: no clipping.
    inpaint_neg_p: fraction of each batch's negatives that start from corrupted copies of the positives
      and run Langevin on the corrupted rows only (task-aware CD; 0 = plain IGEBM).
    inpaint: settings of `inpainting` ({steps, step_size, ...}: EBMConfig's inpaint_* fields).
    The first ten arguments are the starter's; `build(EBMConfig(...))` passes them all.
    """

    def __init__(self, model: MlpBackbone, device, buffer_size, langevin_k, langevin_noise_std, langevin_lr,
                 replay_p, lr, l2_coef=0., proj_norm=None, inpaint_neg_p=EBMConfig.inpaint_neg_p, inpaint=None):
        self.model = model
        self.device = torch.device(device)
        self.replay_buffer = deque(maxlen=buffer_size)
        self.langevin_k = langevin_k
        self.langevin_noise_std = langevin_noise_std
        self.langevin_lr = langevin_lr
        self.replay_p = replay_p
        self.lr = lr
        self.l2_coef = l2_coef
        self.proj_norm = proj_norm
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.0, 0.999))  # IGEBM
        self.inpaint_config = {**EBMConfig().inpainting(), **(inpaint or {})}
        self.energy_limit = 1e4  # |E| beyond this (or NaN) counts as divergence
        self.inpaint_neg_p = inpaint_neg_p
        self.x_pos = None      # positive samples of the last step
        self.x_neg_init = None  # initial negatives of the last step
        self.x_neg = None      # negatives of the last step

    # ---- sampling -------------------------------------------------------------------------
    def _grad_f(self, x, clip=None):
        """grad_x f(x) for a batch (each pixel clipped to [-clip, clip]), leaving parameters' .grad alone."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.model(x).sum(), x)
        return grad if clip is None else grad.clamp_(-clip, clip)

    def _langevin(self, x, steps, step_size, noise_std, mask=None, generator=None, grad_clip="default",
                  anchor=None, fidelity=0.0):
        """Langevin on the pixels where `mask` is True (all pixels when None), values kept in [0, 1].

        With `anchor` (the observed image) each step also moves `fidelity * (anchor - x)`: the gradient
        of a Gaussian observation log-likelihood, so the chain samples the posterior given the noisy pixels."""
        clip = self.proj_norm if grad_clip == "default" else grad_clip
        requires = [p.requires_grad for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(False)
        try:
            x = x.detach().clone()
            for _ in range(steps):
                step = step_size * self._grad_f(x, clip)
                if fidelity:
                    step = step + fidelity * (anchor - x)
                if noise_std > 0:
                    step = step + noise_std * torch.randn(x.shape, generator=generator, device=x.device)
                if mask is not None:
                    step = step * mask
                x = (x + step).clamp_(0.0, 1.0)
        finally:
            for p, r in zip(self.model.parameters(), requires):
                p.requires_grad_(r)
        return x

    # homework: Langevin dynamics of the negatives
    def langevin_dynamic(self, x: torch.Tensor):
        """`langevin_k` Langevin steps from x (B, 1, 28, 28) that descend E = -f; returns detached samples."""
        return self._langevin(x, self.langevin_k, self.langevin_lr, self.langevin_noise_std)

    # homework: where the negative chains start (noise or replay buffer)
    def init_negative(self, batch_size):
        """Start of the negative chains: each is U(0, 1) noise with probability 1 - replay_p, else a
        random replay-buffer sample (all noise while the buffer is empty)."""
        shape = (batch_size,) + tuple(self.model.input_shape)
        x = torch.rand(shape, device=self.device)
        if self.replay_buffer:
            from_buffer = (torch.rand(batch_size) < self.replay_p).nonzero().flatten().tolist()
            if from_buffer:
                picks = [self.replay_buffer[random.randrange(len(self.replay_buffer))] for _ in from_buffer]
                x[from_buffer] = torch.stack(picks).to(self.device)
        return x

    def sample(self, num_samples, steps=None, generator=None, start=None, step_size=None):
        """Unconditional samples: Langevin chains (default: 4 x langevin_k steps of langevin_lr) from `start`
        (num_samples images), by default uniform noise."""
        shape = (num_samples,) + tuple(self.model.input_shape)
        x = torch.rand(shape, generator=generator) if start is None else start
        steps = 4 * self.langevin_k if steps is None else steps
        step_size = self.langevin_lr if step_size is None else step_size
        return self._langevin(x.to(self.device), steps, step_size, self.langevin_noise_std, generator=generator)

    # ---- training -------------------------------------------------------------------------
    def loss_terms(self, x_pos, x_neg):
        """(loss, E(x+), E(x-)): CD loss mean E(x+) - mean E(x-) plus alpha * mean(E(x+)^2 + E(x-)^2)."""
        energy = -self.model(torch.cat([x_pos, x_neg])).squeeze(1)
        e_pos, e_neg = energy[:len(x_pos)], energy[len(x_pos):]
        loss = e_pos.mean() - e_neg.mean() + self.l2_coef * (e_pos.pow(2) + e_neg.pow(2)).mean()
        return loss, e_pos, e_neg

    # homework: one contrastive-divergence step with the L2 energy term
    def train_step(self, batch_x: torch.Tensor):
        """One CD update; returns a dict of floats (loss, e_pos, e_neg, grad_norm).

        Raises TrainingDiverged (weights left as they were before the step when the loss itself is
        not finite) if the energies are NaN/inf or exceed `energy_limit`."""
        self.x_pos = batch_x = batch_x.to(self.device)
        n_task = int(round(self.inpaint_neg_p * batch_x.shape[0]))
        self.x_neg_init = x_neg_init = self.init_negative(batch_x.shape[0] - n_task)
        x_neg = uncond = self.langevin_dynamic(x_neg_init)
        if n_task:
            corrupted, mask = row_corruption(batch_x[:n_task])
            task = self._langevin(corrupted, self.langevin_k, self.langevin_lr, self.langevin_noise_std,
                                  mask=mask.float())
            x_neg = torch.cat([x_neg, task])
        self.x_neg = x_neg
        self.model.train()
        loss, e_pos, e_neg = self.loss_terms(batch_x, x_neg)
        stats = dict(loss=loss.item(), e_pos=e_pos.mean().item(), e_neg=e_neg.mean().item())
        if not all(math.isfinite(v) and abs(v) < self.energy_limit for v in stats.values()):
            raise TrainingDiverged(f"energies diverged (E(x+)={stats['e_pos']:.4g}, E(x-)={stats['e_neg']:.4g}, "
                                   f"loss={stats['loss']:.4g})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf")))
        if not math.isfinite(stats["grad_norm"]):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"parameter gradient is not finite (loss={stats['loss']:.4g})")
        self.optimizer.step()
        # Only the unconditional chains are continued later: task negatives start next to the data, and in
        # the buffer their descendants would crowd out the chains that learn to turn noise into digits.
        self.replay_buffer.extend(uncond.cpu().unbind(0))  # each (1, 28, 28)
        return stats

    def weights_finite(self):
        return all(torch.isfinite(p).all() for p in self.model.parameters())

    # ---- inpainting -----------------------------------------------------------------------
    # homework: inpainting of the corrupted pixels
    @torch.no_grad()
    def inpainting(self, corrupted: torch.Tensor, mask, generator=None, **overrides):
        """Recover corrupted pixels by Langevin sampling from the model restricted to them.

        corrupted: (B, C, H, W) in [0, 1]; mask: same shape, True where a pixel is corrupted and may
        change. For each horizontal shift in `shifts` (the image rolled sideways by that many pixels: the
        MLP energy is not shift-invariant, and its errors at neighbouring positions are partly independent)
        `chains` chains start at `chain_start` (observation and row interpolation mixed) and run `steps`
        Langevin steps (step size `step_size`, noise `noise_std`, pixel gradient clipped to `grad_clip`, plus
        a pull `fidelity * (corrupted - x)` towards the observation) on the masked pixels; the average over
        chains and shifts, rolled back (an estimate of the posterior mean, which minimises the expected
        squared error), is returned.
        Unmasked pixels are returned bit for bit unchanged and the result lies in [0, 1]. Settings default
        to `self.inpaint_config`; keywords override them.
        """
        cfg = {**self.inpaint_config, **{k: v for k, v in overrides.items() if v is not None}}
        unknown = set(cfg) - set(INPAINT_KEYS)
        if unknown:
            raise TypeError(f"unknown inpainting settings: {sorted(unknown)}")
        self.model.eval()
        corrupted = corrupted.to(self.device)
        mask = torch.as_tensor(mask, device=self.device).bool().expand_as(corrupted)
        chains, shifts = int(cfg["chains"]), [int(s) for s in cfg["shifts"]]
        # one chain per (chain, shift): the image rolled sideways by `shift` pixels, rolled back afterwards
        observed = torch.cat([corrupted.clamp(0, 1).roll(s, dims=-1) for s in shifts]).repeat(chains, 1, 1, 1)
        shifted_mask = torch.cat([mask.roll(s, dims=-1) for s in shifts]).repeat(chains, 1, 1, 1)
        x = chain_start(observed, shifted_mask, cfg["start_mix"], cfg["start_mix_clipped"])
        x = self._langevin(x, int(cfg["steps"]), cfg["step_size"], cfg["noise_std"], mask=shifted_mask.float(),
                           generator=generator, grad_clip=cfg["grad_clip"], anchor=observed,
                           fidelity=cfg["fidelity"])
        x = x.view(chains, len(shifts), *corrupted.shape)
        mean = torch.stack([x[:, i].roll(-s, dims=-1) for i, s in enumerate(shifts)], 1).mean((0, 1)).clamp_(0, 1)
        return torch.where(mask, mean, corrupted)

    # ---- checkpoints ----------------------------------------------------------------------
    def config(self):
        """The EBMConfig that rebuilds this trainer (with its current inpainting settings)."""
        return EBMConfig(input_shape=tuple(self.model.input_shape), hidden_size=self.model.hidden_size,
                         buffer_size=self.replay_buffer.maxlen, langevin_k=self.langevin_k,
                         langevin_noise_std=self.langevin_noise_std, langevin_lr=self.langevin_lr,
                         replay_p=self.replay_p, lr=self.lr, l2_coef=self.l2_coef, proj_norm=self.proj_norm,
                         inpaint_neg_p=self.inpaint_neg_p,
                         **{f"inpaint_{key}": value for key, value in self.inpaint_config.items()})

    # homework: save and load
    def save(self, save_path):
        """The shipped form, atomically: config and fp32 weights (the resumable training state, with
        optimizer and replay buffer, is the run folder's last.pt). Refuses non-finite weights."""
        if not self.weights_finite():
            raise TrainingDiverged(f"refusing to save non-finite weights to {save_path}")
        try:
            config = self.config()
        except ValueError as err:  # settings changed after loading (benchmarks/ebm_export.py) outside their ranges
            raise UserError(f"not saved to {save_path}: {err}") from None
        return save_checkpoint(save_path, KIND, config, model=self.model.state_dict())

    def load(self, load_pth, evaluate=True):
        """Load the weights and inpainting settings of a checkpoint (file, or folder holding ebm.pt, shipped.pt
        or best.pt) into this trainer; evaluate=False leaves the model in training mode. Returns the checkpoint.
        Every problem with the file is a one-line CheckpointError (`load` builds a trainer from the file)."""
        _, config, ckpt = load_model(load_pth, KIND, EBMConfig, lambda _config: self.model, names=CHECKPOINT_NAMES,
                                     device=self.device)
        self.inpaint_config = config.inpainting()
        self.model.train(not evaluate)
        return ckpt


def backbone(config):
    return MlpBackbone(config.input_shape, config.hidden_size)


def trainer_for(model, config, device="cpu"):
    """The Trainer of `model` with the settings of `config` (an EBMConfig)."""
    return Trainer(model, device, config.buffer_size, config.langevin_k, config.langevin_noise_std,
                   config.langevin_lr, config.replay_p, config.lr, config.l2_coef, config.proj_norm,
                   inpaint_neg_p=config.inpaint_neg_p, inpaint=config.inpainting())


def build(config, device="cpu"):
    """A fresh Trainer (with its MlpBackbone on `device`) from an EBMConfig. The EBM's "model" is the Trainer:
    it holds the sampler and the inpainting the evaluation calls."""
    return trainer_for(backbone(config).to(device), config, device)


def load(path=DEFAULT_PATH, device="cpu"):
    """The Trainer of a checkpoint (file, or folder holding ebm.pt / shipped.pt / best.pt), model in eval mode.
    Bad files (unreadable, another model, bad config, missing, misshapen or non-finite weights): one-line
    CheckpointError."""
    model, config, _ = load_model(path, KIND, EBMConfig, backbone, names=CHECKPOINT_NAMES, device=device)
    return trainer_for(model, config, device)
