"""The inpainting study (`python -m report.inpainting`): each inpainting method on tiny models (shapes, observed
pixels kept, masked pixels moved toward a known optimum), the references, the cache, and the table's agreement
with the models' own commands (ebm/main.py --play, realnvp/inpainting.py)."""
import json

import pytest
import torch
from torch import nn

import gan
import realnvp.realnvp
import report.inpainting as study
import vae
from ebm.ebm import EBMConfig, build as build_ebm, trainer_for
from ebm.protocol import corrupt, evaluate_inpainting, inpaint, row_interpolation
from gan.gan import Generator
from mnistgen.checkpoint import save_checkpoint
from mnistgen.data import load_mnist
from realnvp.realnvp import (HALF, BatchNormFlow, FlowSequential, RealNVPConfig, build as build_flow,
                             masked_inputs, nearest_neighbour, recompute_batchnorm)
from realnvp.realnvp import inpaint_pixels
from report.inpainters import gan_inpainting, interpolation, knn_completion, vae_inpainting
from vae.vae import VAEConfig, build as build_vae

FAST_SPLIT = RealNVPConfig(arch="split", num_hidden=8, hidden=(2, 2), res_blocks=0, checker=(1, 1), channel=(1,))


def bottom_mask(n):
    mask = torch.zeros(n, 1, 28, 28, dtype=torch.bool)
    mask[:, :, 14:] = True
    return mask


@pytest.fixture(scope="module")
def train_images():
    return load_mnist(train=True)[0]


@pytest.fixture(scope="module")
def test_images():
    return load_mnist(train=False)[0][:8]


# ---------------------------------------------------------------- references
def test_interpolation_is_the_row_baseline_on_rows_and_the_mean_below_the_first_masked_row(test_images):
    corrupted, mask = corrupt(test_images, seed=0)
    mean = torch.full((1, 28, 28), 0.25)
    assert torch.equal(interpolation(corrupted, mask, mean), row_interpolation(corrupted, mask))
    filled = interpolation(test_images, bottom_mask(8), mean)
    assert torch.equal(filled[:, :, :14], test_images[:, :, :14])
    assert torch.equal(filled[:, :, 14], test_images[:, :, 13])   # one observed neighbour: copied
    assert (filled[:, :, 15:] == 0.25).all()


def test_nearest_neighbour_reference_is_the_flow_commands_baseline(train_images):
    train = train_images[:500]
    raw, corrupted, mask = masked_inputs(train[:6], torch.Generator().manual_seed(0))
    shape = (6, 1, 28, 28)
    ours = knn_completion(corrupted.view(shape), mask.view(shape), train, 1, exclude=torch.arange(6))
    assert torch.equal(ours.view(6, -1)[:, HALF:], nearest_neighbour(raw, train, torch.arange(6))[:, HALF:])
    assert torch.equal(ours.view(6, -1)[:, :HALF], corrupted[:, :HALF])


def test_knn_average_keeps_observed_pixels_and_finds_an_exact_match(train_images):
    train = train_images[:300]
    mask = bottom_mask(4)
    corrupted = torch.where(mask, torch.rand(4, 1, 28, 28), train[:4])
    assert torch.equal(knn_completion(corrupted, mask, train, 1), train[:4])   # the image itself is the optimum
    average = knn_completion(corrupted, mask, train, 20)
    assert average.shape == corrupted.shape and torch.equal(average[~mask], corrupted[~mask])
    with pytest.raises(ValueError, match="one mask"):
        knn_completion(corrupted, torch.stack([mask[0], ~mask[0], mask[0], mask[0]]), train, 1)


# ---------------------------------------------------------------- model methods on tiny models
def check_completion(recovered, corrupted, mask, optimum):
    """Shapes and observed pixels kept (bit for bit), and the masked pixels nearer `optimum` than at the start."""
    assert recovered.shape == corrupted.shape
    assert torch.equal(recovered[~mask], corrupted[~mask])
    before = (corrupted - optimum)[mask].pow(2).mean()
    after = (recovered - optimum)[mask].pow(2).mean()
    assert after < 0.5 * before, (before.item(), after.item())


class Quadratic(nn.Module):
    """f(x) = -||x - optimum||^2 / 2: the EBM density's mode is `optimum`."""

    def __init__(self, optimum):
        super().__init__()
        self.register_buffer("optimum", optimum)
        self.unused = nn.Parameter(torch.zeros(()))   # the Trainer's optimiser needs a parameter

    def forward(self, x):
        return -(x - self.optimum).pow(2).flatten(1).sum(1, keepdim=True) / 2


def test_ebm_inpainting_on_any_mask_moves_toward_the_energy_minimum(test_images):
    optimum = test_images[:4]
    trainer = trainer_for(Quadratic(optimum), EBMConfig(inpaint_shifts=(0,), inpaint_steps=40))
    mask = bottom_mask(4)
    corrupted = torch.where(mask, torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)), optimum)
    check_completion(inpaint(trainer, corrupted, mask, seed=0), corrupted, mask, optimum)


def test_ebm_protocol_inpainting_is_plays(test_images):
    trainer = build_ebm(EBMConfig(inpaint_steps=2))
    corrupted, mask = corrupt(test_images, 42)
    assert torch.equal(inpaint(trainer, corrupted, mask, 42), evaluate_inpainting(trainer, test_images)["recovered"])


def test_flow_inpainting_on_any_mask_reaches_the_gaussians_mode(tmp_path):
    """A flow of one batch norm is a Gaussian in logit space: the ascent ends at sigmoid(its mean), pixel by pixel."""
    flow = FlowSequential(None, BatchNormFlow(784)).eval()
    flow[0].running_mean.copy_(torch.linspace(-2, 2, 784))
    optimum = torch.sigmoid(flow[0].running_mean).expand(3, 784)
    corrupted, mask = corrupt(torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)), seed=0)
    corrupted, mask = corrupted.view(3, 784), mask.view(3, 784)
    assert ((corrupted == 0) | (corrupted == 1)).any()   # clipped readings: infinite logits unless moved
    recovered = inpaint_pixels(flow, corrupted, mask)
    check_completion(recovered, corrupted, mask, optimum)
    assert torch.allclose(recovered[mask], optimum[mask], atol=1e-3)


def louder_labels(layer):
    """A label embedding that outweighs the latent's, so that no other label fits the image as well."""
    with torch.no_grad():
        layer.weight.mul_(10)


def tiny_target(decode, label=3, latent=4, seed=0):
    z = torch.randn(1, latent, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return decode(z, torch.eye(10)[[label]]).view(1, 1, 28, 28)


def test_vae_inpainting_finds_the_label_and_the_decoded_image():
    torch.manual_seed(0)
    model = build_vae(VAEConfig((1, 28, 28), 10, 4, hidden_size=16)).eval()
    louder_labels(model.dec_label_fc)
    target = tiny_target(model.decode)
    mask = bottom_mask(1)
    corrupted = torch.where(mask, torch.rand(1, 1, 28, 28), target)
    recovered, labels = vae_inpainting(model, corrupted, mask, torch.full((1, 28, 28), 0.5), search_steps=60,
                                       refine_steps=60)
    check_completion(recovered, corrupted, mask, target)
    assert labels.tolist() == [3]


def test_gan_inpainting_finds_the_label_and_the_generated_image():
    torch.manual_seed(0)
    generator = Generator(4, 10, (1, 28, 28), hidden_size=16).eval()
    for m in generator.modules():   # the starter's N(0, 0.02) weights make every image nearly grey
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.3)
    louder_labels(generator.label_fc)
    target = tiny_target(lambda z, y: (generator(z, y).view(1, -1) + 1) / 2)
    mask = bottom_mask(1)
    corrupted = torch.where(mask, torch.rand(1, 1, 28, 28), target)
    recovered, labels = gan_inpainting(generator, corrupted, mask, search_steps=60, refine_steps=60)
    check_completion(recovered, corrupted, mask, target)
    assert labels.tolist() == [3]


# ---------------------------------------------------------------- the study against the models' own commands
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, train_images):
    folder = tmp_path_factory.mktemp("models")
    build_ebm(EBMConfig(inpaint_steps=2)).save(folder / "ebm.pt")
    torch.manual_seed(0)
    flow = build_flow(FAST_SPLIT)
    recompute_batchnorm(flow, train_images[:200], batch_size=200)
    save_checkpoint(folder / "realnvp.pt", "realnvp", FAST_SPLIT, model=flow.state_dict())
    return folder


def run_study(tmp_path, models, methods, n=3):
    return study.main(["--num_images", str(n), "--methods", *methods, "--models_dir", str(models),
                       "--cache_dir", str(tmp_path / "cache"), "--figures_dir", str(tmp_path / "figures"),
                       "--device", "cpu"])


def first_steps(monkeypatch, steps=5):
    """The skeleton's inpainting (1,000 gradient steps, a loop over tqdm(range(1000))) cut to its first `steps`: the
    same code on the same inputs, in a fraction of the time."""
    monkeypatch.setattr(realnvp.realnvp, "tqdm", lambda iterable, **kwargs: list(iterable)[:steps])


def test_the_table_is_what_the_models_commands_print(tmp_path, tiny_models, capsys, monkeypatch):
    from ebm import main as ebm_main
    from realnvp import inpainting
    first_steps(monkeypatch)
    res = run_study(tmp_path, tiny_models, ["ebm", "realnvp", "corrupted", "interpolation", "nearest_neighbour"])
    play = ebm_main.main(["--play", "--load_dir", str(tiny_models / "ebm.pt"), "--num_images", "3",
                          "--figure", str(tmp_path / "play.png"), "--device", "cpu"])
    assert res["ebm"]["ebm", "test"]["mse"] == play["mse"].mean().item()
    assert res["corrupted"]["ebm", "test"]["mse"] == play["mse_corrupted"].mean().item()
    assert res["interpolation"]["ebm", "test"]["mse"] == play["mse_interpolation"].mean().item()
    for split in ("test", "train"):
        flow = inpainting.main(["--load_path", str(tiny_models / "realnvp.pt"), "--num_images", "3", "--split", split,
                                "--baseline", "--savedir", str(tmp_path / "pics"), "--device", "cpu"])
        assert res["realnvp"]["flow", split]["mse"] == flow["recovery"]["masked"]
        assert res["corrupted"]["flow", split]["mse"] == flow["masked_input"]["masked"]
        assert res["nearest_neighbour"]["flow", split]["mse"] == flow["nearest_neighbour"]["masked"]
    out = capsys.readouterr().out
    assert "realnvp flow train " in out and (tmp_path / "figures" / "inpainting_flow.png").is_file()


def test_cells_are_cached_per_checkpoint(tmp_path, tiny_models):
    first = run_study(tmp_path, tiny_models, ["ebm", "interpolation"], n=2)
    assert not any(c["cached"] for cells in first.values() for c in cells.values())
    models = tmp_path / "models"
    models.mkdir()
    build_ebm(EBMConfig(inpaint_steps=3)).save(models / "ebm.pt")   # another checkpoint: its rows only recompute
    again = run_study(tmp_path, models, ["ebm", "interpolation"], n=2)
    assert not any(c["cached"] for c in again["ebm"].values())
    assert all(c["cached"] for c in again["interpolation"].values())
    cell = json.loads(next((tmp_path / "cache").glob("interpolation-ebm-test-2-*.json")).read_text())
    assert cell["mse"] == again["interpolation"]["ebm", "test"]["mse"] and len(cell["preview"]) == 2


# ---------------------------------------------------------------- shipped models
@pytest.mark.slow
def test_shipped_models_in_the_table_are_what_their_commands_print(tmp_path, monkeypatch):
    from ebm import main as ebm_main
    from realnvp import inpainting
    first_steps(monkeypatch, 100)   # the split flow's plumbing; its 1,000 steps are the study's own run
    res = run_study(tmp_path, study.MODELS_DIR, ["ebm", "realnvp"], n=3)
    play = ebm_main.main(["--play", "--num_images", "3", "--figure", str(tmp_path / "play.png"), "--device", "cpu"])
    flow = inpainting.main(["--num_images", "3", "--savedir", str(tmp_path / "pics"), "--device", "cpu"])
    assert res["ebm"]["ebm", "test"]["mse"] == play["mse"].mean().item()
    assert res["realnvp"]["flow", "train"]["mse"] == flow["recovery"]["masked"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vae", "gan"])
def test_shipped_latent_models_complete_their_own_images(name):
    """An image the model itself decodes, even rows masked: the search finds its label and nearly its pixels."""
    model = (vae if name == "vae" else gan).load((vae if name == "vae" else gan).DEFAULT_PATH)
    decode = model.decode if name == "vae" else lambda z, y: (model(z, y).reshape(len(z), -1) + 1) / 2
    z = 0.8 * torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 4, 7, 9])
    with torch.no_grad():
        target = decode(z, torch.eye(10)[labels]).view(4, 1, 28, 28)
    corrupted, mask = corrupt(target, seed=1)
    if name == "vae":
        recovered, found = vae_inpainting(model, corrupted, mask, torch.full((1, 28, 28), 0.13))
    else:
        recovered, found = gan_inpainting(model, corrupted, mask)
    check_completion(recovered, corrupted, mask, target)
    assert (recovered - target)[mask].pow(2).mean() < 0.01 and found.tolist() == labels.tolist()
