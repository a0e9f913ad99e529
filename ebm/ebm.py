"""Energy-based model of MNIST digits (Problem 1): the MLP energy, contrastive divergence and inpainting.

The network outputs f(x); the energy is E(x) = -f(x) and the model density p(x) ∝ exp(-E(x)).
Training (IGEBM, Du & Mordatch 2019) alternates short-run Langevin sampling of negatives, started
from uniform noise or from a replay buffer of earlier negatives, with a contrastive-divergence update
that lowers E on data and raises it on negatives, plus the L2 term alpha * (E(x+)^2 + E(x-)^2).
Inpainting runs the same Langevin dynamics on the corrupted pixels only and averages several chains.
"""
import math
import random
from collections import deque

import numpy as np
import torch
import torch.nn as nn

from mnistgen.checkpoint import load_checkpoint, load_state, save_checkpoint
from mnistgen.utils import UserError

__all__ = ["MlpBackbone", "Trainer", "TrainingDiverged", "row_corruption", "KIND", "CHECKPOINT_NAMES", "INPAINT_DEFAULTS"]

KIND = "ebm"
CHECKPOINT_NAMES = ("ebm.pt", "ebm_train.pt")  # looked for when a folder is given

# Langevin settings of `Trainer.inpainting` (chosen on held-out training images, see ebm/README.md);
# a checkpoint's config['inpaint'] overrides them.
INPAINT_DEFAULTS = dict(steps=30, step_size=10.0, noise_std=0.0, chains=1, grad_clip=0.01, fidelity=0.0)


def row_corruption(images, noise_std=0.3, generator=None):
    """The assignment's corruption: rows 0, 2, ..., 26 get N(0, noise_std^2) noise, clipped to [0, 1].
    Returns (corrupted, mask) with mask True on the corrupted rows."""
    mask = torch.zeros(images.shape, dtype=torch.bool, device=images.device)
    mask[..., 0::2, :] = True
    noise = torch.randn(images.shape, generator=generator).to(images.device)
    return torch.where(mask, images + noise_std * noise, images).clamp(0, 1), mask


class TrainingDiverged(UserError):
    """The energies blew up or became NaN: the current weights are garbage and must not be saved."""


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
      pixel's gradient is clipped to [-proj_norm, proj_norm] (IGEBM uses 0.01); None: no clipping.
    """

    def __init__(self, model: MlpBackbone, device, buffer_size, langevin_k, langevin_noise_std, langevin_lr,
                 replay_p, lr, l2_coef=0., proj_norm=None):
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
        self.inpaint_config = dict(INPAINT_DEFAULTS)
        self.energy_limit = 1e4  # |E| beyond this (or NaN) counts as divergence
        # Fraction of each batch's negatives that start from corrupted copies of the positives and run
        # Langevin on the corrupted rows only (task-aware CD; 0 = plain IGEBM). Set after construction.
        self.inpaint_neg_p = 0.0
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

    def langevin_dynamic(self, x: torch.Tensor):
        """`langevin_k` Langevin steps from x (B, 1, 28, 28) that descend E = -f; returns detached samples."""
        return self._langevin(x, self.langevin_k, self.langevin_lr, self.langevin_noise_std)

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

    def sample(self, num_samples, steps=None, generator=None):
        """Unconditional samples: Langevin chains from uniform noise (default: 4 x langevin_k steps)."""
        shape = (num_samples,) + tuple(self.model.input_shape)
        x = torch.rand(shape, generator=generator).to(self.device)
        steps = 4 * self.langevin_k if steps is None else steps
        return self._langevin(x, steps, self.langevin_lr, self.langevin_noise_std, generator=generator)

    # ---- training -------------------------------------------------------------------------
    def loss_terms(self, x_pos, x_neg):
        """(loss, E(x+), E(x-)): CD loss mean E(x+) - mean E(x-) plus alpha * mean(E(x+)^2 + E(x-)^2)."""
        energy = -self.model(torch.cat([x_pos, x_neg])).squeeze(1)
        e_pos, e_neg = energy[:len(x_pos)], energy[len(x_pos):]
        loss = e_pos.mean() - e_neg.mean() + self.l2_coef * (e_pos.pow(2) + e_neg.pow(2)).mean()
        return loss, e_pos, e_neg

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
    @torch.no_grad()
    def inpainting(self, corrupted: torch.Tensor, mask, generator=None, **overrides):
        """Recover corrupted pixels by Langevin sampling from the model restricted to them.

        corrupted: (B, C, H, W) in [0, 1]; mask: same shape, True where a pixel is corrupted and may
        change. Each of `chains` chains starts at the corrupted image and runs `steps` Langevin steps
        (step size `step_size`, noise `noise_std`, pixel gradient clipped to `grad_clip`, plus a pull
        `fidelity * (corrupted - x)` towards the observation) on the masked pixels; the chains' average
        (an estimate of the posterior mean, which minimises the expected squared error) is returned.
        Unmasked pixels are returned bit for bit unchanged and the result lies in [0, 1]. Settings default
        to `self.inpaint_config`; keywords override them.
        """
        cfg = {**self.inpaint_config, **{k: v for k, v in overrides.items() if v is not None}}
        unknown = set(cfg) - set(INPAINT_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown inpainting settings: {sorted(unknown)}")
        self.model.eval()
        corrupted = corrupted.to(self.device)
        mask = torch.as_tensor(mask, device=self.device).bool().expand_as(corrupted)
        chains = int(cfg["chains"])
        x = corrupted.clamp(0, 1).repeat(chains, 1, 1, 1)
        fmask = mask.repeat(chains, 1, 1, 1).float()
        x = self._langevin(x, int(cfg["steps"]), cfg["step_size"], cfg["noise_std"], mask=fmask,
                           generator=generator, grad_clip=cfg["grad_clip"], anchor=x.clone(),
                           fidelity=cfg["fidelity"])
        mean = x.view(chains, *corrupted.shape).mean(0).clamp_(0, 1)
        return torch.where(mask, mean, corrupted)

    # ---- checkpoints ----------------------------------------------------------------------
    def config(self):
        """Constructor settings (and inpainting defaults) that rebuild this trainer."""
        return dict(input_shape=list(self.model.input_shape), hidden_size=self.model.hidden_size,
                    buffer_size=self.replay_buffer.maxlen, langevin_k=self.langevin_k,
                    langevin_noise_std=self.langevin_noise_std, langevin_lr=self.langevin_lr,
                    replay_p=self.replay_p, lr=self.lr, l2_coef=self.l2_coef, proj_norm=self.proj_norm,
                    inpaint_neg_p=self.inpaint_neg_p, inpaint=dict(self.inpaint_config))

    def save(self, save_path, full=True, **extra):
        """Atomic checkpoint. full=True adds the optimizer and the replay buffer (for --resume);
        full=False is the shipped form: weights and config only. Refuses non-finite weights."""
        if not self.weights_finite():
            raise TrainingDiverged(f"refusing to save non-finite weights to {save_path}")
        state = dict(model=self.model.state_dict(), **extra)
        if full:
            state["optimizer"] = self.optimizer.state_dict()
            state["replay_buffer"] = (torch.stack(list(self.replay_buffer)) if self.replay_buffer
                                      else torch.zeros((0,) + tuple(self.model.input_shape)))
        return save_checkpoint(save_path, KIND, self.config(), **state)

    def load(self, load_pth, evaluate=True):
        """Load weights (and, when present, optimizer and replay buffer) from a file or a folder
        holding ebm.pt / ebm_train.pt; returns the checkpoint dict. Bad paths: CheckpointError."""
        ckpt = load_checkpoint(load_pth, KIND, names=CHECKPOINT_NAMES)
        load_state(self.model, ckpt["model"], load_pth)
        self.inpaint_config = {**INPAINT_DEFAULTS, **ckpt["config"].get("inpaint", {})}
        if "optimizer" in ckpt and not evaluate:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if "replay_buffer" in ckpt and not evaluate:
            self.replay_buffer.clear()
            self.replay_buffer.extend(ckpt["replay_buffer"].float().unbind(0))
        self.model.train(not evaluate)
        return ckpt

    @classmethod
    def from_checkpoint(cls, path, device="cpu", evaluate=True):
        """Rebuild model and trainer from a checkpoint's config, then load it."""
        ckpt = load_checkpoint(path, KIND, names=CHECKPOINT_NAMES)
        cfg = ckpt["config"]
        model = MlpBackbone(cfg.get("input_shape", (1, 28, 28)), cfg.get("hidden_size", 512)).to(device)
        trainer = cls(model, device, cfg.get("buffer_size", 10000), cfg.get("langevin_k", 60),
                      cfg.get("langevin_noise_std", 0.005), cfg.get("langevin_lr", 10.0),
                      cfg.get("replay_p", 0.95), cfg.get("lr", 1e-4), cfg.get("l2_coef", 1.0),
                      cfg.get("proj_norm", 0.01))
        trainer.inpaint_neg_p = cfg.get("inpaint_neg_p", 0.0)
        trainer.load(path, evaluate=evaluate)
        return trainer
