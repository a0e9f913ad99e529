"""RealNVP (Dinh et al., 2017, https://arxiv.org/abs/1605.08803) for flattened MNIST: two flows built from
the same layers, each shipped for its own job (`build(RealNVPConfig(arch=...))` builds each).

- "multiscale" (models/realnvp_multiscale.pt, for samples and bits/dim): the paper's architecture
  (Sec. 3.6). The flat vector keeps an "active prefix" of shape (C, H, W): checkerboard couplings on it,
  a squeeze (a fixed permutation, (C, H, W) -> (4C, H/2, W/2)), channel couplings, then half of the
  channels are factored out (they stay in the tail of the vector untouched and go straight to the prior).
- "split" (models/realnvp.pt, for the graders' bottom-half inpainting): the skeleton's half-mask
  CouplingLayer makes p(bottom half | top half) a Gaussian in logit space, and a multi-scale flow
  models the top half (`_split_modules`).

Every module maps a flat batch (B, 784) to (B, 784) and its `forward(inputs, mode)` returns
`(outputs, logdet)` with logdet of shape (B, 1): 'direct' is x -> z, 'inverse' is z -> x.
Masks, permutations and the prior's parameters are registered buffers, so a model loaded from a
state_dict samples and inpaints at once. Data: pixels dequantized and rescaled to [0.0001, 0.9999]
(`preprocess`); the flow models their logits.
"""
import dataclasses
import math
import os
import tempfile
from typing import Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.distributions.normal import Normal
from tqdm import tqdm

from mnistgen.checkpoint import load_model
from mnistgen.utils import MODELS_DIR, Range, check_ranges

KIND = "realnvp"
DEFAULT_PATH = MODELS_DIR / "realnvp.pt"                        # the graders' flow (inpainting.py)
MULTISCALE_PATH = MODELS_DIR / "realnvp_multiscale.pt"          # the generator (sample.py)
CHECKPOINT_NAMES = ("realnvp.pt", "checkpoint_best.pt", "best.pt")   # looked for in a folder given as the path
NUM_INPUTS = 28 * 28
LO, HI = 0.0001, 0.9999


@dataclasses.dataclass
class RealNVPConfig:
    """The flow's constructor settings; `arch` picks the architecture, each reads only its fields (ARCH_FIELDS).
    The defaults are the shipped split flow's."""
    arch: str = "split"                   # split or multiscale (module docstring)
    hidden: Tuple[int, ...] = (16, 48)    # channels of the coupling nets, one per resolution
    res_blocks: int = 1                   # residual blocks per coupling net
    checker: Tuple[int, ...] = (2, 3)     # checkerboard couplings per resolution
    channel: Tuple[int, ...] = (2,)       # channel couplings after each squeeze
    bn_momentum: float = 0.1              # BatchNormFlow's running-statistics momentum (the skeleton's)
    num_hidden: int = 512                 # split: hidden units of the bottom half's Gaussian coupling

    # The values each field accepts (each value, for the tuples), for a checkpoint's config and for the flag of the
    # same name alike: checked before a model is built, so that a config cannot ask for gigabytes first.
    RANGES = dict(hidden=Range(1, 512), res_blocks=Range(0, 4), checker=Range(0, 16), channel=Range(0, 16),
                  bn_momentum=Range(0, 1, integer=False), num_hidden=Range(1, 4096))

    def __post_init__(self):
        if self.arch not in ARCH_FIELDS:
            raise ValueError(f"unknown architecture {self.arch!r} (expected one of {', '.join(ARCH_FIELDS)})")
        levels = LEVELS[self.arch]
        if (len(self.hidden), len(self.checker), len(self.channel)) != (levels, levels, levels - 1):
            raise ValueError(f"arch {self.arch}: hidden and checker take {levels} values (one per resolution), "
                             f"channel {levels - 1}")
        check_ranges(self, self.RANGES)


# The fields each architecture reads, and its resolutions (multiscale: 28x28, 14x14, 7x7; split: the top
# half at 14x28, 7x14).
ARCH_FIELDS = {"split": ("hidden", "res_blocks", "checker", "channel", "bn_momentum", "num_hidden"),
               "multiscale": ("hidden", "res_blocks", "checker", "channel", "bn_momentum")}
LEVELS = {"multiscale": 3, "split": 2}
# `python realnvp/train.py --arch A` trains PRESETS[A]: the shipped checkpoints' architectures.
PRESETS = {"split": RealNVPConfig(),
           "multiscale": RealNVPConfig(arch="multiscale", hidden=(12, 48, 96), checker=(3, 3, 4), channel=(3, 3))}
SHIPPED_PATHS = {"split": DEFAULT_PATH, "multiscale": MULTISCALE_PATH}


def _zeros_logdet(inputs):
    return inputs.new_zeros(inputs.size(0), 1)


class BatchNormFlow(nn.Module):
    """Batch normalization as a flow layer (RealNVP paper, Sec. 3.7), one statistic per dimension.

    Running statistics follow the skeleton: running = momentum * running + (1 - momentum) * batch,
    so with momentum 0.1 they are mostly the last batch; `recompute_batchnorm` replaces them by
    averages over the training set before evaluation.
    """

    def __init__(self, num_inputs, momentum=0.0, eps=1e-5):
        super().__init__()
        self.num_inputs = num_inputs
        self.log_gamma = nn.Parameter(torch.zeros(num_inputs))
        self.beta = nn.Parameter(torch.zeros(num_inputs))
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(num_inputs))
        self.register_buffer("running_var", torch.ones(num_inputs))
        self.batch_mean = self.batch_var = None

    def _stats(self):
        # Inverse passes in training mode reuse the statistics of the last direct pass (as the
        # skeleton does); without one (e.g. sampling from a freshly loaded model) the running ones.
        if self.training and self.batch_mean is not None:
            return self.batch_mean, self.batch_var
        return self.running_mean, self.running_var

    def forward(self, inputs, mode="direct", **kwargs):
        if mode == "direct":
            if self.training:
                self.batch_mean = inputs.mean(0)
                self.batch_var = (inputs - self.batch_mean).pow(2).mean(0) + self.eps
                with torch.no_grad():
                    self.running_mean.mul_(self.momentum).add_(self.batch_mean * (1 - self.momentum))
                    self.running_var.mul_(self.momentum).add_(self.batch_var * (1 - self.momentum))
            mean, var = self._stats()
            y = torch.exp(self.log_gamma) * (inputs - mean) / var.sqrt() + self.beta
            logdet = (self.log_gamma - 0.5 * torch.log(var)).sum(-1, keepdim=True)
            return y, logdet.expand(inputs.size(0), 1)
        mean, var = self._stats()
        x = (inputs - self.beta) / torch.exp(self.log_gamma) * var.sqrt() + mean
        logdet = (-self.log_gamma + 0.5 * torch.log(var)).sum(-1, keepdim=True)
        return x, logdet.expand(inputs.size(0), 1)


class Shuffle(nn.Module):
    """A fixed permutation of the dimensions (log-det 0): random by default, or the one given
    (the multi-scale flow's squeeze is a Shuffle with a structured permutation)."""

    def __init__(self, num_inputs, perm=None):
        super().__init__()
        self.num_inputs = num_inputs
        perm = torch.as_tensor(np.random.permutation(num_inputs) if perm is None else perm, dtype=torch.long)
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, inputs, mode="direct", **kwargs):
        index = self.perm if mode == "direct" else self.inv_perm
        return inputs[:, index], _zeros_logdet(inputs)


class CouplingLayer(nn.Module):
    """Affine coupling with MLP nets (the skeleton's layer): the dimensions where mask == 1 pass
    through and condition z = x * exp(s) + t on the others (paper, Eq. 7-9)."""

    def __init__(self, num_inputs, num_hidden, mask, s_act=nn.Tanh(), t_act=nn.ReLU()):
        super().__init__()
        self.num_inputs = num_inputs
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32).clone())
        self.scale_net = nn.Sequential(nn.Linear(num_inputs, num_hidden), s_act,
                                       nn.Linear(num_hidden, num_hidden), s_act,
                                       nn.Linear(num_hidden, num_inputs))
        self.translate_net = nn.Sequential(nn.Linear(num_inputs, num_hidden), t_act,
                                           nn.Linear(num_hidden, num_hidden), t_act,
                                           nn.Linear(num_hidden, num_inputs))

    def forward(self, inputs, mode="direct", **kwargs):
        mask = self.mask
        masked_inputs = inputs * mask
        log_s = self.scale_net(masked_inputs) * (1 - mask)
        t = self.translate_net(masked_inputs) * (1 - mask)
        if mode == "direct":
            return inputs * torch.exp(log_s) + t, log_s.sum(-1, keepdim=True)
        return (inputs - t) * torch.exp(-log_s), -log_s.sum(-1, keepdim=True)


class _ResNet(nn.Module):
    """conv3x3 -> [ReLU, conv3x3, ReLU, conv3x3] residual blocks -> ReLU, conv3x3 (zero-initialised,
    so every coupling starts as the identity)."""

    def __init__(self, in_channels, hidden, out_channels, res_blocks):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1))
            for _ in range(res_blocks))
        self.conv_out = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x):
        h = self.conv_in(x)
        for block in self.blocks:
            h = h + block(h)
        return self.conv_out(F.relu(h))


class ConvCouplingLayer(nn.Module):
    """Affine coupling on the active prefix (C, H, W) of the flat vector with a convolutional net.

    `mask` (C, H, W) is a checkerboard or a channel mask (1 = passes through and conditions).
    The net sees the masked image plus the mask itself (so zero padding and masked zeros differ)
    and returns s, t; log-scale s = scale * tanh(raw) keeps exp(s) bounded early in training.
    """

    def __init__(self, num_inputs, shape, mask, hidden, res_blocks=1):
        super().__init__()
        self.num_inputs = num_inputs
        self.shape = tuple(int(v) for v in shape)
        channels = self.shape[0]
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32).reshape(self.shape).clone())
        self.net = _ResNet(channels + 1, hidden, 2 * channels, res_blocks)
        self.scale = nn.Parameter(torch.ones(channels, 1, 1))

    def _s_t(self, x):
        mask = self.mask
        net_in = torch.cat([x * mask, mask[:1].expand(x.size(0), 1, *self.shape[1:])], dim=1)
        raw_s, t = self.net(net_in).chunk(2, dim=1)
        log_s = self.scale * torch.tanh(raw_s) * (1 - mask)
        return log_s, t * (1 - mask)

    def forward(self, inputs, mode="direct", **kwargs):
        n = self.mask.numel()
        x, rest = inputs[:, :n].reshape(-1, *self.shape), inputs[:, n:]
        log_s, t = self._s_t(x)   # (B, C, H, W); depend only on x * mask, which is left unchanged
        if mode == "direct":
            y, logdet = x * torch.exp(log_s) + t, log_s.flatten(1).sum(-1, keepdim=True)
        else:
            y, logdet = (x - t) * torch.exp(-log_s), -log_s.flatten(1).sum(-1, keepdim=True)
        return torch.cat([y.flatten(1), rest], dim=1), logdet


class FlowSequential(nn.Sequential):
    """A sequence of flow layers with a standard-normal prior on the output."""

    def __init__(self, device, *args):
        super().__init__(*args)
        self.num_inputs = getattr(args[0], "num_inputs", NUM_INPUTS) if args else NUM_INPUTS
        # Buffers (not a Distribution attribute) so that .to(device) and state_dict carry them.
        self.register_buffer("prior_loc", torch.zeros(1))
        self.register_buffer("prior_scale", torch.ones(1))
        if device is not None:
            self.to(device)

    @property
    def prior(self):
        return Normal(self.prior_loc, self.prior_scale)

    def _pre_process(self, x):
        """Logits of x in (0, 1) (paper, Sec. 4.1); the log-det of this step is in `logit_logdet`."""
        return x.log() - (1. - x).log()

    def forward(self, inputs, mode="direct", logdets=None, **kwargs):
        assert mode in ("direct", "inverse")
        if logdets is None:
            logdets = torch.zeros(inputs.size(0), 1, device=inputs.device, dtype=inputs.dtype)
        if mode == "direct":
            if kwargs.get("pre_process", True):
                inputs = self._pre_process(inputs)
            modules = self._modules.values()
        else:
            modules = reversed(self._modules.values())
        for module in modules:
            inputs, logdet = module(inputs, mode)
            logdets = logdets + logdet
        return inputs, logdets

    def log_probs(self, inputs, pre_process=True):
        """log p of the logits of `inputs` (or of `inputs` themselves with pre_process=False), (B, 1)."""
        u, log_jacob = self(inputs, pre_process=pre_process)
        log_prior = self.prior.log_prob(u).sum(-1, keepdim=True)
        return log_prior + log_jacob

    def sample(self, num_samples=None, noise=None):
        """Logits x = f^-1(z), z ~ N(0, I) (or the given noise); images are sigmoid(x)."""
        device = self.prior_loc.device
        if noise is None:
            noise = torch.randn(num_samples, self.num_inputs, device=device)
        return self.forward(noise.to(device), mode="inverse")[0]

    #####################################################################################
    # The skeleton's method: inputs and outputs and every step kept (graders call it).
    # Only the image saving uses nrow=10 for any num_samples.
    def inpainting(self, num_samples, inputs, mask, savedir):
        os.makedirs(savedir, exist_ok=True)
        device = next(self.parameters()).device
        inputs = inputs.to(device).requires_grad_(True)
        inputs = inputs.log() - (1. - inputs).log()

        for i in tqdm(range(1000), mininterval=5):
            alpha = 0.2
            log_probs = self.log_probs(inputs, pre_process=False)
            dx = torch.autograd.grad([log_probs.sum()], [inputs])[0]
            dx = torch.clip(dx, -10, 10)

            with torch.no_grad():
                inputs[mask] += alpha * (dx[mask])
                inputs[mask] = torch.clip(inputs[mask], -10, 10)

            imgs = torch.sigmoid(inputs.view(num_samples, 1, 28, 28))
            if i % 10 == 0:
                torchvision.utils.save_image(imgs, os.path.join(savedir, 'img_{:03d}.png'.format(i + 1)), nrow=10)
                alpha *= 0.99
        return imgs
    #####################################################################################

    def save_images(self, epoch, savedir, noise=None):
        """A 10x10 grid of samples as savedir/img_{epoch:03d}.png."""
        was_training = self.training
        self.eval()
        if noise is None:
            noise = self.prior.sample([100, self.num_inputs]).squeeze(-1)
        with torch.no_grad():
            imgs = torch.sigmoid(self.sample(100, noise=noise).view(-1, 1, 28, 28)).cpu()
        os.makedirs(savedir, exist_ok=True)
        path = os.path.join(savedir, "img_{:03d}.png".format(epoch))
        torchvision.utils.save_image(imgs, path, nrow=10)
        self.train(was_training)
        return path


# ---------------------------------------------------------------------------------------------
# Building the three architectures


def _squeeze_perm(shape, num_inputs):
    """Permutation of the flat vector: active prefix (C, H, W) -> (4C, H/2, W/2), tail unchanged."""
    c, h, w = shape
    idx = torch.arange(c * h * w).view(c, h // 2, 2, w // 2, 2)
    perm = idx.permute(0, 2, 4, 1, 3).reshape(-1)   # channel = (c, row parity, column parity)
    return torch.cat([perm, torch.arange(c * h * w, num_inputs)])


def checkerboard(shape, parity):
    c, h, w = shape
    board = (torch.arange(h).view(h, 1) + torch.arange(w).view(1, w) + parity) % 2
    return board.float().expand(c, h, w).clone()


def channel_mask(shape, parity):
    c, h, w = shape
    mask = torch.zeros(c, h, w)
    mask[: c // 2] = 1
    return mask if parity == 0 else 1 - mask


def _multiscale_modules(hidden, res_blocks, checker, channel, bn_momentum, num_inputs=NUM_INPUTS,
                        shape=(1, 28, 28)):
    """The paper's multi-scale flow on the active prefix `shape` (28x28 -> 14x14 -> 7x7 for the whole image).
    At level i: checker[i] checkerboard couplings (nets of hidden[i] channels); then, except at the last
    level, a squeeze and channel[i] channel couplings at the next resolution (hidden[i + 1] channels), and
    half of the channels factored out. Each coupling is followed by a BatchNormFlow (paper, Sec. 3.7)."""
    modules = []

    def add(mask_fn, count, width):
        for k in range(count):
            modules.append(ConvCouplingLayer(num_inputs, shape, mask_fn(shape, k % 2), width, res_blocks))
            modules.append(BatchNormFlow(num_inputs, bn_momentum))

    levels = len(checker)
    for level in range(levels):
        add(checkerboard, checker[level], hidden[level])
        if level == levels - 1:
            break
        modules.append(Shuffle(num_inputs, _squeeze_perm(shape, num_inputs)))
        shape = (4 * shape[0], shape[1] // 2, shape[2] // 2)
        add(channel_mask, channel[level], hidden[level + 1])
        shape = (shape[0] // 2, shape[1], shape[2])   # factor out: the second half of the channels
    return modules


def _split_modules(c, num_inputs=NUM_INPUTS):
    """log p(x) = log p(bottom | top) + log p(top), built for the inpainting protocol.

    First (data side) the skeleton's CouplingLayer with the first/second-half mask: the bottom half's
    logits become u = x_bottom * exp(s(top)) + t(top), a Gaussian p(bottom | top) whose mean and scale the
    MLP nets predict from the top half. The top half (the 14x28 active prefix) gets a multi-scale flow, which
    changes the bottom's coordinates only by its batch norms' elementwise affine maps. So with the top fixed,
    log p is a concave quadratic in the bottom logits, and the skeleton's gradient ascent converges to the
    predicted conditional mean instead of a spurious mode.
    """
    top = torch.zeros(num_inputs)
    top[: num_inputs // 2] = 1
    modules = [CouplingLayer(num_inputs, c.num_hidden, top), BatchNormFlow(num_inputs, c.bn_momentum)]
    modules += _multiscale_modules(c.hidden, c.res_blocks, c.checker, c.channel, c.bn_momentum, num_inputs,
                                   shape=(1, 14, 28))
    gaussian = modules[0]   # initialised after every layer is built, so the random draws keep their order
    for layer in gaussian.modules():   # the skeleton's initialisation: orthogonal weights, zero biases
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight)
            nn.init.zeros_(layer.bias)
    for net in (gaussian.scale_net, gaussian.translate_net):
        nn.init.zeros_(net[-1].weight)   # starts as the identity
    return modules


def build(config):
    """The FlowSequential a RealNVPConfig describes (on the CPU, in training mode)."""
    c = config
    if c.arch == "multiscale":
        modules = _multiscale_modules(c.hidden, c.res_blocks, c.checker, c.channel, c.bn_momentum)
    else:
        modules = _split_modules(c)
    return FlowSequential(None, *modules)


def load(path=DEFAULT_PATH, device="cpu"):
    """The flow of a checkpoint (a file, or a folder holding one of CHECKPOINT_NAMES) in eval mode, with
    its stored batch-norm statistics; a bad file is a one-line CheckpointError."""
    return load_model(path, KIND, RealNVPConfig, build, CHECKPOINT_NAMES, device=device)[0]


# ---------------------------------------------------------------------------------------------
# Data and likelihood


def preprocess(images, generator=None):
    """The skeleton's data: flatten, add U(0, 1/256) noise, rescale each image to [LO, HI].

    Returns (x (B, 784) in [LO, HI], log_scale (B, 1)): the log-derivative of the per-image
    rescaling x = LO + (d - min d) * (HI - LO) / (max d - min d), for bits/dim.
    """
    d = images.reshape(images.size(0), -1).float()
    noise = torch.rand(d.shape, generator=generator, device=d.device) if generator is not None else torch.rand_like(d)
    d = d + noise / 256.
    lo, hi = d.min(1, keepdim=True).values, d.max(1, keepdim=True).values
    scale = (HI - LO) / (hi - lo)
    return LO + (d - lo) * scale, torch.log(scale)


def logit_logdet(x):
    """log |d logit(x) / dx| summed over dimensions, (B, 1)."""
    return -(torch.log(x) + torch.log1p(-x)).sum(-1, keepdim=True)


def bits_per_dim(model, x, log_scale, log_probs=None):
    """Bits/dim in 8-bit pixel space v = 256 d (d: dequantized pixel in [0, 1 + 1/256)).

    log p(v) = log p_flow(logit x) + log|d logit/dx| + D log(scale) - D log 256, with log p_flow =
    `log_probs` when already computed (B, 1), else model.log_probs(x). Returns a (B,) tensor.
    """
    dim = x.size(1)
    log_probs = model.log_probs(x) if log_probs is None else log_probs
    log_p = log_probs + logit_logdet(x) + dim * log_scale - dim * math.log(256.)
    return -log_p.squeeze(1) / (dim * math.log(2.))


@torch.no_grad()
def recompute_batchnorm(model, images, batch_size=500, generator=None):
    """Running statistics of every BatchNormFlow = average over `images` (N, 1, 28, 28) of the
    batch statistics (each layer in training mode sees the previous ones' batch-normalised output,
    as in training). Leaves the model in eval mode."""
    layers = [m for m in model.modules() if isinstance(m, BatchNormFlow)]
    if not layers:
        return model.eval()
    device = model.prior_loc.device
    sums = {id(m): [0., 0.] for m in layers}
    model.train()
    count = 0
    for start in range(0, len(images), batch_size):
        x, _ = preprocess(images[start:start + batch_size].to(device), generator)
        model(x)
        n = x.size(0)
        for m in layers:
            sums[id(m)][0] = sums[id(m)][0] + m.batch_mean * n
            # E[x^2] per batch (batch_var includes eps), so that var = E[x^2] - E[x]^2 overall
            sums[id(m)][1] = sums[id(m)][1] + (m.batch_var + m.batch_mean ** 2) * n
        count += n
    for m in layers:
        mean = sums[id(m)][0] / count
        m.running_mean.copy_(mean)
        m.running_var.copy_(sums[id(m)][1] / count - mean ** 2)
        m.batch_mean = m.batch_var = None
    return model.eval()


@torch.no_grad()
def evaluate_bpd(model, images, batch_size=500, seed=1234):
    """Mean bits/dim of `images` (N, 1, 28, 28) in [0, 1], with fixed dequantization noise."""
    model.eval()
    device = model.prior_loc.device
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(images), batch_size):
        x, log_scale = preprocess(images[start:start + batch_size], gen)
        total += bits_per_dim(model, x.to(device), log_scale.to(device)).sum().item()
    return total / len(images)


@torch.no_grad()
def draw_samples(model, n, temperature=1.0, seed=0, batch_size=500):
    """n images (n, 1, 28, 28) in [0, 1]: sigmoid of the flow's inverse of z ~ N(0, temperature^2 I), z drawn
    from a generator seeded with `seed`."""
    gen = torch.Generator().manual_seed(seed)
    device = model.prior_loc.device
    model.eval()
    out = []
    for start in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - start), model.num_inputs, generator=gen) * temperature
        out.append(torch.sigmoid(model.sample(noise=z.to(device))).cpu())
    return torch.cat(out).view(-1, 1, 28, 28)


# ---------------------------------------------------------------------------------------------
# The inpainting protocol (realnvp/inpainting.py) and its nearest-neighbour baseline

HALF = 392  # pixels of the top half; the bottom half (392:) is masked


def is_split(model):
    """Whether `model` is a split flow: its first layer the Gaussian stage (a CouplingLayer whose passing half is the
    top half)."""
    first = model[0]
    return isinstance(first, CouplingLayer) and bool(first.mask[:HALF].all()) and not first.mask[HALF:].any()


def bottom_mode(model, logits):
    """The bottom-half logits (B, 392) at which a split flow's Gaussian p(bottom | top) is largest (its mean), for
    the top half of `logits` (B, 784): the point the inpainting's gradient ascent converges to."""
    gaussian, *rest = list(model)
    # The later layers change the bottom's coordinates only by their batch norms' elementwise affine maps:
    # carry z_bottom = 0 back through them, then through the Gaussian stage with the given top half.
    z = torch.zeros_like(logits)
    for m in reversed(rest):
        if isinstance(m, BatchNormFlow):
            z = m(z, "inverse")[0]
    u = torch.cat([logits[:, :HALF], z[:, HALF:]], dim=1)
    return gaussian(u, "inverse")[0][:, HALF:]


@torch.no_grad()
def mode_inpainting(model, images, batch_size=500):
    """`images` (N, 784) in (0, 1) with their bottom half replaced by the split flow's bottom_mode given their top:
    where the inpainting protocol's 1,000 gradient steps end, in one pass (eval mode)."""
    model.eval()
    device = model.prior_loc.device
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        mode = torch.sigmoid(bottom_mode(model, torch.logit(x)))
        out.append(torch.cat([x[:, :HALF], mode], dim=1).cpu())
    return torch.cat(out)


def masked_inputs(images, generator):
    """(raw x (N, 784), masked copy, bool mask (N, 784)) of the graders' protocol: dequantized and
    rescaled images, bottom half replaced by Bernoulli(0.5) values rescaled to [LO, HI]. The noise
    comes from `generator` (a CPU torch.Generator): a fresh one seeded with s draws exactly what the
    global generator drew after torch.manual_seed(s)."""
    x, _ = preprocess(images, generator)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, HALF:] = True
    corrupted = x.clone()
    noise = torch.bernoulli(torch.full((x.size(0), x.size(1) - HALF), 0.5), generator=generator)
    corrupted[:, HALF:] = noise * (HI - LO) + LO
    return x, corrupted, mask


def inpaint_mse(recovered, raw):
    """{'masked': MSE over the bottom half, 'all': MSE over all 784 pixels}."""
    err = (recovered.reshape(raw.shape) - raw) ** 2
    return dict(masked=err[:, HALF:].mean().item(), all=err.mean().item())


def nearest_neighbour(raw, train_images, exclude=None, chunk=500):
    """Top half of raw + bottom half of the training image whose top half is nearest (L2).
    exclude[i] = index of raw[i] among the training images (never copied), or None."""
    train = train_images.reshape(len(train_images), -1).float()
    top = train[:, :HALF]
    out = torch.empty(len(raw), train.size(1) - HALF)
    for start in range(0, len(raw), chunk):
        dist = torch.cdist(raw[start:start + chunk, :HALF].float(), top)
        if exclude is not None:
            dist[torch.arange(dist.size(0)), exclude[start:start + chunk]] = float("inf")
        out[start:start + chunk] = train[dist.argmin(1), HALF:]
    return torch.cat([raw[:, :HALF], out], dim=1)


def run_inpainting(model, corrupted, mask, savedir, batch=100):
    """model.inpainting in chunks of `batch` images (independent in eval mode); only the first
    chunk's pictures go to savedir. Returns the recovered images (N, 784)."""
    device = model.prior_loc.device
    out = []
    with tempfile.TemporaryDirectory() as scratch:
        for start in range(0, len(corrupted), batch):
            chunk = corrupted[start:start + batch]
            imgs = model.inpainting(len(chunk), chunk.to(device), mask[start:start + batch].to(device),
                                    savedir if start == 0 else scratch)
            out.append(imgs.detach().cpu().reshape(len(chunk), -1))
    return torch.cat(out)


def inpaint_pixels(model, corrupted, mask, batch=100):
    """The skeleton's gradient ascent (`run_inpainting`, pictures discarded) on any mask: `corrupted` (N, 784) in
    [0, 1], `mask` (N, 784) True where a pixel may change. Pixels at exactly 0 or 1 (infinite logits, as clipped
    noise gives) start at LO or HI; the observed pixels are returned as given. On the protocol's input (already in
    [LO, HI]) the masked pixels are run_inpainting's, bit for bit."""
    start = torch.where((corrupted <= 0) | (corrupted >= 1), corrupted.clamp(LO, HI), corrupted)
    with tempfile.TemporaryDirectory() as scratch:
        recovered = run_inpainting(model, start, mask, scratch, batch)
    return torch.where(mask, recovered, corrupted)
