"""Inpainting for the models that have none of their own, and the model-free references (report/inpainting.py).

Every function takes `corrupted` (N, 1, 28, 28) and a boolean `mask` of the same shape (True where a pixel is
unknown and may change) and returns a completion of the same shape whose observed pixels are `corrupted`'s.

- `latent_inpainting`: the conditional VAE and GAN without the label. For each of the ten labels y, Adam finds
  the latent z that maximises log p(z) + log p(observed pixels | z, y) under a Gaussian pixel noise of std sigma,
  i.e. minimises E(z, y) = ||observed - decode(z, y)||^2 / (2 sigma^2) + ||z||^2 / 2 over the observed pixels;
  the label with the lowest E wins, its z is refined further and the masked pixels are read from decode(z, y).
  Trying every label, rather than optimising a soft label, keeps the decoder on the one-hot inputs it was trained
  on: a mixed label is an input it never saw, and the optimiser can use it to fit the observed pixels with an
  image that is no digit.
- references: `interpolation` (vertical neighbours' mean, else the training mean) and `knn_completion` (the
  mean of the k training images nearest on the observed pixels).
"""
import math

import torch
from tqdm import tqdm

from ebm.ebm import vertical_interpolation

LABELS = 10
# Adam on the latents: all ten labels for SEARCH_STEPS, then the winner alone for REFINE_STEPS more
SEARCH_STEPS = 50
REFINE_STEPS = 100
LATENT_LR = 0.05
CHUNK = 100           # images per optimisation batch (x 10 labels during the search)
GAN_SIGMA = 0.1       # the GAN has no likelihood: the pixel noise its fit assumes (near the VAE's learned 0.08)


# ---------------------------------------------------------------------------------------------- references
def interpolation(corrupted, mask, train_mean):
    """Each masked pixel the mean of its observed neighbours above and below (`vertical_interpolation`: on the
    EBM protocol's even rows, its row-interpolation baseline), or the training images' mean pixel where it has no
    observed neighbour (the bottom half, below its first row)."""
    known = ~mask
    above = torch.zeros_like(known)
    above[..., 1:, :] = known[..., :-1, :]
    below = torch.zeros_like(known)
    below[..., :-1, :] = known[..., 1:, :]
    lonely = mask & ~above & ~below
    return torch.where(lonely, train_mean.expand_as(corrupted), vertical_interpolation(corrupted, mask))


def shared_observed(mask):
    """The observed pixels (784,) of a mask that every image shares (both protocols' masks are)."""
    flat = mask.reshape(len(mask), -1)
    if not (flat == flat[:1]).all():
        raise ValueError("the nearest-neighbour references need one mask shared by all images")
    return ~flat[0]


def neighbour_indices(corrupted, mask, train_images, k, exclude=None, chunk=500):
    """(N, k) indices of the k training images nearest (L2) to each corrupted image on the observed pixels, nearest
    first. exclude[i]: the index of image i among the training images (never a neighbour of itself), or None."""
    observed = shared_observed(mask)
    train = train_images.reshape(len(train_images), -1)[:, observed].float()
    queries = corrupted.reshape(len(corrupted), -1)[:, observed].float()
    out = []
    for start in range(0, len(queries), chunk):
        dist = torch.cdist(queries[start:start + chunk], train)
        if exclude is not None:
            dist[torch.arange(dist.size(0)), exclude[start:start + chunk]] = float("inf")
        out.append(dist.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


def knn_completion(corrupted, mask, train_images, k, exclude=None):
    """The masked pixels of the mean of the k nearest training images (`neighbour_indices`): k = 1 is the nearest
    neighbour (`realnvp.nearest_neighbour` on the bottom half); a larger k approximates the posterior mean, the
    completion with the least expected squared error."""
    index = neighbour_indices(corrupted, mask, train_images, k, exclude)
    fill = torch.stack([train_images[i].float().mean(0) for i in index])   # (N, 1, 28, 28)
    return torch.where(mask, fill, corrupted)


# ---------------------------------------------------------------------------------------------- latent models
def fit_latents(decode, observed, known, z, labels, sigma, steps, lr=LATENT_LR):
    """`steps` Adam steps on z (B, L) minimising E(z, y) (module docstring) for fixed one-hot `labels` (B, 10);
    observed, known: (B, 784). Returns (z, E (B,) at the returned z)."""
    z = z.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)

    def energy():
        misfit = ((decode(z, labels) - observed) * known).pow(2).sum(1)
        return misfit / (2 * sigma ** 2) + z.pow(2).sum(1) / 2

    with torch.enable_grad():
        for _ in range(steps):
            # rows are independent: each z gets its own gradient (and the decoder's weights none)
            (z.grad,) = torch.autograd.grad(energy().sum(), [z])
            optimizer.step()
    with torch.no_grad():
        return z.detach(), energy()


def latent_inpainting(decode, init, corrupted, mask, guess, sigma, device="cpu", search_steps=SEARCH_STEPS,
                      refine_steps=REFINE_STEPS, progress=None):
    """Completion of `corrupted` by a class-conditional decoder without the label (module docstring).

    decode(z (B, L), one-hot y (B, 10)) -> images (B, 784) in [0, 1]; init(guess (B, 784), y) -> the search's
    starting z (B, L), given a first guess of the whole image (`guess`, (N, 1, 28, 28)). Returns (completion
    (N, 1, 28, 28), chosen labels (N,)) on the CPU; decode and init run on `device`. `progress`, a description,
    shows a progress bar."""
    n = len(corrupted)
    flat, known, guess = (t.reshape(n, -1).float().to(device) for t in (corrupted, ~mask, guess))
    eye = torch.eye(LABELS, device=device)
    done, chosen = [], []
    for start in tqdm(range(0, n, CHUNK), desc=progress, disable=progress is None, leave=False):
        x, k, g = flat[start:start + CHUNK], known[start:start + CHUNK], guess[start:start + CHUNK]
        b = len(x)
        # every image with every label: row i * 10 + y
        y10 = eye.repeat(b, 1)
        x10, k10 = x.repeat_interleave(LABELS, 0), k.repeat_interleave(LABELS, 0)
        with torch.no_grad():
            z0 = init(g.repeat_interleave(LABELS, 0), y10)
        z, energy = fit_latents(decode, x10, k10, z0, y10, sigma, search_steps)
        best = energy.view(b, LABELS).argmin(1)
        winners = torch.arange(b, device=device) * LABELS + best
        z, _ = fit_latents(decode, x, k, z[winners], eye[best], sigma, refine_steps)
        with torch.no_grad():
            done.append(decode(z, eye[best]).cpu())
        chosen.append(best.cpu())
    completion = torch.cat(done).view_as(corrupted)
    return torch.where(mask, completion, corrupted), torch.cat(chosen)


def vae_inpainting(model, corrupted, mask, train_mean, progress=None, **steps):
    """`latent_inpainting` with the CVAE's decoder means and its learned pixel std exp(recon_logstd); each label's
    search starts at the encoder's mean for the corrupted image with its masked pixels interpolated (`interpolation`):
    amortised inference's guess, which the search refines."""
    guess = interpolation(corrupted, mask, train_mean)
    sigma = math.exp(model.recon_logstd.item())
    return latent_inpainting(model.decode, lambda g, y: model.encode(g, y)[0], corrupted, mask, guess, sigma,
                             model.recon_logstd.device, progress=progress, **steps)


def gan_inpainting(generator, corrupted, mask, progress=None, **steps):
    """`latent_inpainting` with the GAN's generator (eval mode: its batch-norm running statistics) and the pixel
    std GAN_SIGMA; each label's search starts at z = 0, the prior's mode."""
    def decode(z, y):
        return (generator(z, y).reshape(len(z), -1) + 1) / 2

    def init(guess, y):
        return torch.zeros(len(guess), generator.latent_dim, device=guess.device)

    device = next(generator.parameters()).device
    return latent_inpainting(decode, init, corrupted, mask, corrupted, GAN_SIGMA, device, progress=progress, **steps)
