"""The EBM's evaluation protocol, shared by ebm/main.py (--play and training's validation), ebm/sample.py,
benchmarks/ebm_tune.py and `figures` (the main job's numbers).

Inpainting (the assignment's): rows 0, 2, ..., 26 of every image get N(0, 0.3^2) noise, clipped to [0, 1];
the EBM recovers them with `Trainer.inpainting`; the score is the per-image MSE over the 784 pixels.
The baseline replaces each corrupted row by the mean of its clean neighbours.
"""
import torch
import torch.nn.functional as F
from tqdm import tqdm

from classifier.unconditional import sample_quality, sample_references
from ebm.ebm import EBMConfig, MlpBackbone, row_corruption, trainer_for
from mnistgen.cache import cached
from mnistgen.data import SHA256 as MNIST_SHA256, find_root, load_mnist
from mnistgen.utils import UserError

NOISE_STD = 0.3       # corruption of the even rows (assignment protocol)
VAL_IMAGES = 2000     # the last 2,000 training images are held out: validation and tuning, never trained on
# Unconditional samples: chains from a Gaussian mixture fitted to the training images (`StartMixture`), 300
# steps of 30 (chosen on held-out training images: the chains hardly move after 300 steps; a larger step reaches
# the same place sooner).
SAMPLE_STEPS = 300
SAMPLE_STEP_SIZE = 30.0
START_CLUSTERS = 10       # k-means clusters of the start mixture (no labels)
START_COMPONENTS = 30     # principal directions of each cluster's Gaussian
START_KINDS = ("mixture", "noise")
NUM_SAMPLES = 1000    # samples scored by `figures`


# ---------------------------------------------------------------------------------------------- inpainting
def corrupt(images, seed):
    """The assignment's corruption with a fixed noise seed: even rows + 0.3 * N(0, 1), clipped to [0, 1]."""
    return row_corruption(images, NOISE_STD, generator=torch.Generator().manual_seed(seed))


def row_interpolation(corrupted, mask):
    """Baseline: every corrupted row becomes the mean of its clean neighbours (row 0 copies row 1)."""
    padded = torch.cat([corrupted[..., 1:2, :], corrupted, corrupted[..., -1:, :]], dim=-2)  # (.., 30, 28)
    above, below = padded[..., :-2, :], padded[..., 2:, :]
    return torch.where(mask, (above + below) / 2, corrupted)


def per_image_mse(a, b):
    return ((a.float() - b.float()) ** 2).flatten(1).mean(1)


def inpaint(trainer, corrupted, mask, seed, batch_size=1000, progress=False, **overrides):
    """`Trainer.inpainting` of `corrupted` (N, 1, 28, 28) in batches, on any `mask` (True where a pixel may change),
    with Langevin noise from a generator seeded with seed + 1: the recovery of --play for the protocol's corruption,
    and the EBM's inpainting of any other."""
    generator = torch.Generator().manual_seed(seed + 1)
    recovered = []
    starts = range(0, len(corrupted), batch_size)
    for start in tqdm(starts, desc="inpainting", disable=not progress, leave=False):
        sl = slice(start, start + batch_size)
        recovered.append(trainer.inpainting(corrupted[sl], mask[sl], generator=generator, **overrides).cpu())
    return torch.cat(recovered)


def evaluate_inpainting(trainer, images, seed=42, batch_size=1000, progress=False, **overrides):
    """Corrupt `images` with the protocol's noise (fixed seed) and inpaint them in batches.

    Returns dict(recovered, corrupted, mask, mse (per image), mse_corrupted, mse_interpolation)."""
    corrupted, mask = corrupt(images, seed)
    recovered = inpaint(trainer, corrupted, mask, seed, batch_size, progress, **overrides)
    return dict(recovered=recovered, corrupted=corrupted, mask=mask, mse=per_image_mse(images, recovered),
                mse_corrupted=per_image_mse(images, corrupted),
                mse_interpolation=per_image_mse(images, row_interpolation(corrupted, mask)))


# ---------------------------------------------------------------------------------------------- samples
def smoothed_noise(n, generator, shape=(1, 28, 28)):
    """Noise that unconditional chains start from: U(0, 1) pixels blurred by a 3x3 box filter and stretched
    back to [0, 1] per image. Still pure noise, but with stroke-sized blobs instead of single-pixel speckle,
    so the chains settle into digits more often than from plain U(0, 1)."""
    u = torch.rand((n, *shape), generator=generator)
    blurred = F.avg_pool2d(u, 3, stride=1, padding=1, count_include_pad=False)
    lo, hi = blurred.amin((-2, -1), keepdim=True), blurred.amax((-2, -1), keepdim=True)
    return (blurred - lo) / (hi - lo)


class StartMixture:
    """Where unconditional chains start: a mixture of Gaussians fitted to the EBM's training images (all but the
    held-out ones) without labels. k-means (`clusters`, seeded) splits the images; each cluster gets a Gaussian
    with its mean and its top `components` principal directions; a draw picks a cluster in proportion to its size,
    adds Gaussian noise along those directions and clips to [0, 1]. The draws are blurry digit-like blobs; the
    chains turn them into digits."""

    def __init__(self, images, clusters=START_CLUSTERS, components=START_COMPONENTS, seed=0, iterations=20):
        x = images.reshape(len(images), -1).double()
        gen = torch.Generator().manual_seed(seed)
        centres = x[torch.randperm(len(x), generator=gen)[:clusters]].clone()
        for _ in range(iterations):
            assign = torch.cdist(x, centres).argmin(1)
            centres = torch.stack([x[assign == j].mean(0) if (assign == j).any() else centres[j]
                                   for j in range(clusters)])
        self.shape = tuple(images.shape[1:])
        self.weights = torch.bincount(assign, minlength=clusters).double()
        self.means, self.bases = centres.float(), []
        for j in range(clusters):   # eigh of the covariance: deterministic, unlike randomized PCA
            values, vectors = torch.linalg.eigh(torch.cov(x[assign == j].T))
            top = values.flip(0)[:components].clamp(min=0).sqrt()
            self.bases.append((vectors.flip(1)[:, :components] * top).float())   # (D, components), scaled
        self.bases = torch.stack(self.bases)

    def state(self):
        return dict(shape=list(self.shape), weights=self.weights, means=self.means, bases=self.bases)

    @classmethod
    def from_state(cls, state):
        mixture = cls.__new__(cls)
        mixture.shape, mixture.weights = tuple(state["shape"]), state["weights"]
        mixture.means, mixture.bases = state["means"], state["bases"]
        return mixture

    def sample(self, n, generator):
        cluster = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.bases.size(2), 1, generator=generator)
        x = self.means[cluster] + torch.bmm(self.bases[cluster], z).squeeze(2)
        return x.clamp(0, 1).view(n, *self.shape)


_START_MIXTURES = {}


def start_mixture(data_root=None):
    """The StartMixture of the training images the EBM trained on: fitted once (k-means on 58,000 images takes
    seconds) and kept in the disk cache, keyed by the MNIST files and the fit's settings."""
    key = str(data_root)
    if key not in _START_MIXTURES:
        find_root(data_root)  # the files are there and match the SHA-256 sums of the cache key
        fit = lambda: StartMixture(load_mnist(train=True, data_root=data_root)[0][:-VAL_IMAGES]).state()
        settings = dict(what="EBM start mixture", mnist=MNIST_SHA256, held_out=VAL_IMAGES, clusters=START_CLUSTERS,
                        components=START_COMPONENTS, seed=0, iterations=20, version=1)
        _START_MIXTURES[key] = StartMixture.from_state(cached("ebm-start-mixture", settings, fit))
    return _START_MIXTURES[key]


def draw_samples(trainer, n, steps=SAMPLE_STEPS, seed=42, step_size=SAMPLE_STEP_SIZE, start="mixture",
                 data_root=None):
    """n unconditional samples: Langevin chains of `steps` steps of `step_size`, 500 at a time (chain noise and
    clipping as in training), from `start_mixture` draws ("mixture") or from `smoothed_noise` ("noise")."""
    if start not in START_KINDS:
        raise UserError(f"unknown chain start {start!r} (expected one of {', '.join(START_KINDS)})")
    gen = torch.Generator().manual_seed(seed)
    draw = start_mixture(data_root).sample if start == "mixture" else smoothed_noise
    batches = [min(500, n - s) for s in range(0, n, 500)]
    return torch.cat([trainer.sample(b, steps=steps, generator=gen, start=draw(b, gen), step_size=step_size)
                      .cpu() for b in batches])


def figures(trainer, device, data_root=None):
    """The main job's numbers for a Trainer (or a bare MlpBackbone, given EBMConfig's inpainting settings).

    mse, mse_corrupted, mse_interpolation: mean per-image MSE on the 10,000 test images (noise seed 42) of the
    EBM's inpainting, the corrupted input and the row-interpolation baseline. When the classifier is shipped,
    samples / start / real / noise: its dict(confidence, counts, fid) for NUM_SAMPLES samples of SAMPLE_STEPS Langevin
    steps, as many draws of the chains' start (`StartMixture`), real training digits and U(0, 1) noise images;
    otherwise `samples_unavailable` says why."""
    if isinstance(trainer, MlpBackbone):
        trainer = trainer_for(trainer, EBMConfig(), device)
    test_images = load_mnist(train=False, data_root=data_root)[0]
    res = evaluate_inpainting(trainer, test_images, seed=42)
    numbers = dict(test_images=len(test_images), sample_steps=SAMPLE_STEPS, num_samples=NUM_SAMPLES,
                   **{key: res[key].mean().item() for key in ("mse", "mse_corrupted", "mse_interpolation")})
    try:
        samples = draw_samples(trainer, NUM_SAMPLES, SAMPLE_STEPS, data_root=data_root)
        references = sample_references(NUM_SAMPLES, data_root)
        starts = start_mixture(data_root).sample(NUM_SAMPLES, torch.Generator().manual_seed(42))
        sets = dict(samples=samples, start=starts, real=references["real training digits"],
                    noise=references["uniform noise"])
        numbers.update({name: sample_quality(x, device, data_root) for name, x in sets.items()})
    except UserError as err:  # no classifier yet
        numbers["samples_unavailable"] = str(err)
    return numbers
