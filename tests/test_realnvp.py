"""RealNVP: invertibility, log-determinants, the config and checkpoints, bits/dim, the inpainting protocol,
the scripts (smoke runs, resume, bad input) and the shipped flows (slow)."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, assert_one_line_error, run_script
from mnistgen.checkpoint import CheckpointError, config_from_dict, load_checkpoint, save_checkpoint
from mnistgen.data import load_mnist
from realnvp import (DEFAULT_PATH, KIND, PRESETS, BatchNormFlow, ConvCouplingLayer, CouplingLayer, RealNVPConfig,
                     Shuffle, bits_per_dim, build, draw_samples, evaluate_bpd, figures, load, masked_inputs, nearest_neighbour,
                     preprocess, recompute_batchnorm)
from realnvp.realnvp import HALF, HI, LO, bottom_mode, channel_mask, checkerboard, inpaint_mse, logit_logdet, mode_inpainting

TINY_MULTISCALE = RealNVPConfig(arch="multiscale", hidden=(4, 6, 8), res_blocks=1, checker=(2, 2, 2), channel=(2, 2))
TINY_SPLIT = RealNVPConfig(arch="split", num_hidden=16, hidden=(4, 6), res_blocks=1, checker=(2, 2), channel=(2,))
# for the 1,000-step inpainting: the fewest and smallest layers
FAST_SPLIT = RealNVPConfig(arch="split", num_hidden=8, hidden=(2, 2), res_blocks=0, checker=(1, 1), channel=(1,))
SHIPPED = DEFAULT_PATH


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def perturb(model, std=0.05):
    """Non-zero output convolutions and batch-norm parameters, so that no layer is the identity."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, ConvCouplingLayer):
            torch.nn.init.normal_(m.net.conv_out.weight, std=std)
            torch.nn.init.normal_(m.net.conv_out.bias, std=std)
        if isinstance(m, CouplingLayer):   # the split flow's coupling starts as the identity
            for net in (m.scale_net, m.translate_net):
                torch.nn.init.normal_(net[-1].weight, std=std)
        if isinstance(m, BatchNormFlow):
            torch.nn.init.normal_(m.log_gamma, std=0.1)
            torch.nn.init.normal_(m.beta, std=0.1)
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def pixels(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g) * 0.98 + 0.01


def check_inverse(layer, x, train=False):
    layer.train(train)
    z, ld = layer(x, mode="direct")
    x2, ld2 = layer(z, mode="inverse")
    assert ld.shape == (x.size(0), 1) and ld2.shape == (x.size(0), 1)
    assert torch.allclose(x2, x, atol=1e-4)
    assert torch.allclose(ld + ld2, torch.zeros_like(ld), atol=1e-3)
    if not train:   # the other direction: inverse first (batch-norm in training mode needs a direct pass)
        x3, ld3 = layer(x, mode="inverse")
        z3, ld4 = layer(x3, mode="direct")
        assert torch.allclose(z3, x, atol=1e-4)
        assert torch.allclose(ld3 + ld4, torch.zeros_like(ld3), atol=1e-3)


def conv_layer(shape, mask, num_inputs=None):
    layer = ConvCouplingLayer(num_inputs or int(torch.tensor(shape).prod()), shape, mask, hidden=5)
    torch.nn.init.normal_(layer.net.conv_out.weight, std=0.1)
    return layer


def test_bottom_mode_is_the_maximum_of_the_conditional():
    """log p(bottom | top) = log N(z_bottom) + const with z_bottom affine in the bottom logits: its gradient in the
    bottom logits vanishes at bottom_mode, where z_bottom = 0, and log p is lower at nearby points."""
    torch.manual_seed(0)
    model = perturb(build(TINY_SPLIT)).double().eval()
    logits = torch.logit(pixels(4).double())
    mode = bottom_mode(model, logits)
    at_mode = torch.cat([logits[:, :HALF], mode], 1).requires_grad_(True)
    z, _ = model(at_mode, pre_process=False)
    assert z[:, HALF:].abs().max() < 1e-8
    grad = torch.autograd.grad(model.log_probs(at_mode, pre_process=False).sum(), at_mode)[0]
    assert grad[:, HALF:].abs().max() < 1e-8 and grad[:, :HALF].abs().max() > 1e-3
    moved = at_mode.detach().clone()
    moved[:, HALF:] += 0.1 * torch.randn(4, HALF, dtype=torch.float64)
    assert (model.log_probs(moved, pre_process=False) < model.log_probs(at_mode, pre_process=False)).all()


@pytest.mark.parametrize("make", [
    lambda: BatchNormFlow(784, 0.1),
    lambda: Shuffle(784),
    lambda: CouplingLayer(784, 32, (torch.arange(784) % 2).float()),
    lambda: conv_layer((1, 28, 28), checkerboard((1, 28, 28), 0), 784),
    lambda: conv_layer((4, 14, 14), channel_mask((4, 14, 14), 1), 784),
], ids=["batchnorm", "shuffle", "mlp-coupling", "conv-checkerboard", "conv-channel"])
def test_each_layer_inverts(make):
    torch.manual_seed(1)
    layer = perturb(make()) if isinstance(make(), BatchNormFlow) else make()
    x = torch.randn(5, 784)
    check_inverse(layer, x, train=False)
    check_inverse(layer, x, train=True)


@pytest.mark.parametrize("config", [TINY_MULTISCALE, TINY_SPLIT], ids=["multiscale", "split"])
def test_whole_flow_inverts_and_logdets_cancel(config):
    torch.manual_seed(0)
    model = perturb(build(config)).eval()
    x = pixels()
    z, ld = model(x)
    logits, ld_inv = model(z, mode="inverse")
    assert torch.allclose(logits, model._pre_process(x), atol=1e-4)
    assert torch.allclose(ld + ld_inv, torch.zeros_like(ld), atol=1e-3)
    noise = torch.randn(4, 784)
    back, _ = model(model.sample(noise=noise), pre_process=False)
    assert torch.allclose(back, noise, atol=1e-4)


def brute_force_logdet(fn, x):
    jac = torch.autograd.functional.jacobian(fn, x, vectorize=True)   # (D, D)
    return torch.linalg.slogdet(jac).logabsdet


@pytest.mark.parametrize("make", [
    lambda: CouplingLayer(6, 8, torch.tensor([1., 0., 1., 0., 0., 1.])),
    lambda: conv_layer((2, 4, 4), checkerboard((2, 4, 4), 1), 40),
    lambda: conv_layer((4, 2, 2), channel_mask((4, 2, 2), 0), 20),
    lambda: perturb(BatchNormFlow(7, 0.1)),
], ids=["mlp-coupling", "conv-checkerboard", "conv-channel", "batchnorm"])
def test_layer_logdet_matches_jacobian(make):
    torch.manual_seed(2)
    layer = make().double().eval()
    for p in layer.parameters():
        p.data.normal_(0, 0.3)
    dim = layer.num_inputs
    x = torch.randn(dim, dtype=torch.float64)
    _, ld = layer(x[None])
    assert ld.item() == pytest.approx(brute_force_logdet(lambda v: layer(v[None])[0][0], x).item(), abs=1e-6)


@pytest.mark.parametrize("config", [TINY_MULTISCALE, TINY_SPLIT], ids=["multiscale", "split"])
def test_flow_logdet_matches_jacobian(config):
    torch.manual_seed(3)
    model = perturb(build(config)).double().eval()
    x = pixels(1).double()[0]
    _, ld = model(x[None])   # includes every layer, not the logit step
    expected = brute_force_logdet(lambda v: model(v[None], pre_process=False)[0][0], model._pre_process(x))
    assert ld.item() == pytest.approx(expected.item(), abs=1e-5)
    # log-det of the logit step
    jac = brute_force_logdet(lambda v: model._pre_process(v), x)
    assert logit_logdet(x[None]).item() == pytest.approx(jac.item(), abs=1e-6)


@pytest.mark.slow  # the protocol's 1,000 gradient steps
def test_split_flow_inpainting_converges_to_its_conditional_mode(tmp_path):
    """With the top half fixed, log p(bottom | top) = log N(z_bottom) + a constant, a concave quadratic in the
    bottom logits: the skeleton's gradient ascent must end where z_bottom = 0, from the protocol's start."""
    model = perturb(build(TINY_SPLIT)).eval()
    for m in model.modules():   # unit scale on the bottom half, like trained batch norms (curvature ~1, so
        if isinstance(m, BatchNormFlow):   # the skeleton's fixed step 0.2 is stable)
            m.running_var[392:] = 1.0
            m.log_gamma.data[392:] = 0.0
    raw, corrupted, mask = masked_inputs(pixels(4), gen(0))
    with torch.no_grad():
        z, _ = model(raw)
        z[:, 392:] = 0   # the bottom half's latent (factored out unchanged by the top-half flow)
        mode = torch.sigmoid(model.sample(noise=z))
        assert torch.allclose(mode[:, 392:], torch.sigmoid(bottom_mode(model, torch.logit(raw))), atol=1e-5)
    recovered = model.inpainting(4, corrupted.clone(), mask, str(tmp_path)).reshape(4, -1).detach()
    assert torch.allclose(recovered[:, :392], torch.sigmoid(torch.logit(corrupted[:, :392])), atol=1e-6)
    assert torch.allclose(recovered[:, 392:], mode[:, 392:], atol=1e-3)
    assert (recovered[:, 392:] - corrupted[:, 392:]).abs().mean() > 0.1   # it did move


def test_masks_and_permutations_are_buffers():
    state = build(TINY_MULTISCALE).state_dict()
    assert any(k.endswith("mask") for k in state) and any(k.endswith("perm") for k in state)
    assert "prior_loc" in state and "prior_scale" in state


def test_loaded_checkpoint_samples_without_forward(tmp_path):
    torch.manual_seed(0)
    model = perturb(build(TINY_MULTISCALE)).eval()
    noise = torch.randn(3, 784)
    with torch.no_grad():
        expected = model.sample(noise=noise)
    save_checkpoint(tmp_path / "realnvp.pt", KIND, TINY_MULTISCALE, model=model.state_dict())
    loaded = load(tmp_path)   # a folder holding realnvp.pt
    assert not loaded.training
    with torch.no_grad():
        got = loaded.sample(noise=noise)
        fresh = loaded.sample(5)
    assert torch.allclose(got, expected, atol=1e-5)
    assert fresh.shape == (5, 784) and torch.isfinite(fresh).all()
    loaded.train()   # training mode without any batch statistics yet: running ones are used
    with torch.no_grad():
        assert torch.allclose(loaded.sample(noise=noise), expected, atol=1e-5)


def test_preprocess_range_and_scale():
    images = load_mnist(train=False)[0][:50]
    x, log_scale = preprocess(images, torch.Generator().manual_seed(0))
    assert x.shape == (50, 784) and log_scale.shape == (50, 1)
    assert x.min() >= 0.0001 - 1e-7 and x.max() <= 0.9999 + 1e-7
    assert torch.allclose(x.amin(1), torch.full((50,), 0.0001)) and torch.allclose(x.amax(1), torch.full((50,), 0.9999))


def test_bits_per_dim_of_untrained_flow():
    torch.manual_seed(0)
    model = build(TINY_MULTISCALE)
    images = load_mnist(train=True)[0][:500]
    recompute_batchnorm(model, images, batch_size=250)
    x, log_scale = preprocess(load_mnist(train=False)[0][:100], torch.Generator().manual_seed(0))
    with torch.no_grad():
        bpd = bits_per_dim(model, x, log_scale)
    assert bpd.shape == (100,) and torch.isfinite(bpd).all()
    # identity couplings + per-pixel Gaussian in logit space: worse than a trained flow, better than
    # a uniform density over 8-bit pixels (8 bits/dim)
    assert 1.5 < bpd.mean().item() < 8.0


def test_recompute_batchnorm_gives_data_statistics():
    model = build(TINY_SPLIT)
    images = load_mnist(train=True)[0][:400]
    recompute_batchnorm(model, images, batch_size=200, generator=torch.Generator().manual_seed(7))
    first = next(m for m in model.modules() if isinstance(m, BatchNormFlow))
    assert not model.training
    gen = torch.Generator().manual_seed(7)   # the same dequantization noise, batch by batch
    x = torch.cat([preprocess(images[i:i + 200], gen)[0] for i in (0, 200)])
    with torch.no_grad():
        h = model[0](model._pre_process(x))[0]   # input of the first batch-norm layer
    assert torch.allclose(first.running_mean, h.mean(0), atol=1e-4)
    assert torch.allclose(first.running_var, h.var(0, unbiased=False) + first.eps, rtol=1e-3, atol=1e-4)


def tiny_model(tmp_path):
    torch.manual_seed(0)
    model = build(FAST_SPLIT)   # the inpainting method always runs 1000 steps: the fewest layers
    recompute_batchnorm(model, load_mnist(train=True)[0][:200], batch_size=200)
    path = tmp_path / "realnvp.pt"
    save_checkpoint(path, KIND, FAST_SPLIT, model=model.state_dict())
    return path


@pytest.mark.slow  # 1,000 ascent steps
def test_inpainting_keeps_unmasked_pixels(tmp_path):
    model = load(tiny_model(tmp_path))
    raw, corrupted, mask = masked_inputs(load_mnist(train=True)[0][:2], gen(0))
    assert mask[:, 392:].all() and not mask[:, :392].any()
    values = corrupted[:, 392:]
    assert torch.isclose(values, torch.tensor(0.0001)).logical_or(torch.isclose(values, torch.tensor(0.9999))).all()
    imgs = model.inpainting(2, corrupted.clone(), mask, str(tmp_path / "pics")).detach()
    flat = imgs.view(2, 784)
    assert torch.allclose(flat[:, :392], corrupted[:, :392], atol=1e-6)   # sigmoid(logit(x)) == x
    assert not torch.allclose(flat[:, 392:], corrupted[:, 392:], atol=1e-3)
    assert len(list((tmp_path / "pics").glob("img_*.png"))) == 100   # every 10 steps


def test_nearest_neighbour_never_copies_itself():
    train = load_mnist(train=True)[0][:300]
    raw = train[:20].view(20, -1)
    pred = nearest_neighbour(raw, train, exclude=torch.arange(20))
    assert torch.equal(pred[:, :392], raw[:, :392])
    assert not any(torch.equal(pred[i], raw[i]) for i in range(20))


# ---------------------------------------------------------------- config, build, load
def test_presets_and_the_shipped_config_form():
    for config in PRESETS.values():
        assert config_from_dict(RealNVPConfig, dataclasses.asdict(config)) == config
    # a checkpoint stores lists; an older split checkpoint stores only some fields (the others default)
    stored = dict(arch="split", num_hidden=512, hidden=[16, 48], res_blocks=1, checker=[2, 3], channel=[2],
                  bn_momentum=0.1)
    assert config_from_dict(RealNVPConfig, stored) == RealNVPConfig()
    with pytest.raises(ValueError, match="unknown architecture 'bogus'"):
        RealNVPConfig(arch="bogus")
    with pytest.raises(ValueError, match="take 3 values"):
        RealNVPConfig(arch="multiscale")   # the split flow's two resolutions do not fit the whole image


def test_cli_flags_fill_the_preset_and_the_skeleton_spellings_are_aliases():
    from realnvp import train
    args = train.build_parser().parse_args(["--arch", "multiscale", "--hidden", "2,3,4", "--res_blocks", "0"])
    assert train.model_config(args) == dataclasses.replace(PRESETS["multiscale"], hidden=(2, 3, 4), res_blocks=0)
    assert train.model_config(train.build_parser().parse_args([])) == PRESETS["split"]
    dashed = train.build_parser().parse_args(["--batch-size", "7", "--model-dir", "m", "--img-save-dir", "i", "--no-cuda"])
    assert (dashed.batch_size, dashed.model_dir, dashed.img_save_dir, dashed.device) == (7, "m", "i", "cpu")


def test_masked_inputs_draw_from_their_generator_only():
    images = load_mnist(train=True)[0][:5]
    torch.manual_seed(123)
    np.random.seed(123)
    state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    raw, corrupted, mask = masked_inputs(images, gen(0))
    assert torch.equal(torch.get_rng_state(), state) and (np.random.get_state()[1] == np_state).all()
    # the same draws as the original helper, which reseeded the global generator
    torch.manual_seed(0)
    x, _ = preprocess(images)
    bottom = torch.bernoulli(torch.full((5, 784 - HALF), 0.5)) * (HI - LO) + LO
    assert torch.equal(raw, x) and torch.equal(corrupted[:, :HALF], x[:, :HALF])
    assert torch.equal(corrupted[:, HALF:], bottom) and mask[:, HALF:].all() and not mask[:, :HALF].any()


def test_missing_checkpoint_is_user_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load(tmp_path / "nothing.pt")


# ---------------------------------------------------------------- scripts
SMOKE = ["--limit", "200", "--batch_size", "50", "--hidden", "4,4", "--checker", "1,1", "--channel", "1",
         "--num_hidden", "16", "--bn_images", "100", "--device", "cpu"]


@pytest.mark.slow  # smoke trainings
def test_train_smoke_resume_eval_and_ship(tmp_path, capsys):
    from realnvp import train
    run = ["--logdir", str(tmp_path / "run")]
    path = train.main(SMOKE + run + ["--epochs", "1"])
    assert path == tmp_path / "run" / "shipped.pt"   # a --limit run never ships to models/
    assert (tmp_path / "run" / "images" / "img_001.png").is_file()
    shipped = load_checkpoint(path, KIND)
    assert shipped["epoch"] == 1 and math.isfinite(shipped["test_bpd"]) and "optimizers" not in shipped
    assert shipped["dtype"] in ("float16", "float32") and shipped["bn_images"] == 200
    train.main(SMOKE + run + ["--epochs", "2", "--resume"])
    rows = (tmp_path / "run" / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,epoch,loss,train_bpd,test_bpd,test_mode_mse")
    assert [r.split(",")[1] for r in rows[1:]] == ["1", "2"]
    capsys.readouterr()
    bpd = train.main(["--eval", "--load_path", str(path), "--limit", "100", "--device", "cpu"])
    assert math.isfinite(bpd)
    assert f"test bits/dim {bpd:.4f} on 100 test images" in capsys.readouterr().out
    # asked for explicitly: the checkpoint and the README figures go where the flags say
    train.main(SMOKE + ["--logdir", str(tmp_path / "run2"), "--epochs", "1", "--model_dir", str(tmp_path / "m"),
                        "--figures_dir", str(tmp_path / "fig")])
    assert load(tmp_path / "m") is not None
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {"realnvp_samples.png", "realnvp_curves.png"}
    # the multi-scale flow ships under its own name
    train.main(["--arch", "multiscale", "--hidden", "2,2,2", "--checker", "1,1,1", "--channel", "1,1", "--limit", "100",
                "--batch_size", "50", "--bn_images", "100", "--device", "cpu", "--logdir", str(tmp_path / "run3"),
                "--epochs", "1", "--model_dir", str(tmp_path / "m3"), "--figures_dir", str(tmp_path / "fig3")])
    assert load(tmp_path / "m3" / "realnvp_multiscale.pt") is not None
    assert {p.name for p in (tmp_path / "fig3").iterdir()} == {"realnvp_multiscale_samples.png",
                                                               "realnvp_multiscale_curves.png"}


@pytest.mark.slow  # 1,000 ascent steps
def test_inpainting_script_says_where_its_pictures_are(tmp_path, capsys):
    from realnvp import inpainting
    res = inpainting.main(["--load_path", str(tiny_model(tmp_path)), "--num_images", "3", "--split", "test",
                           "--baseline", "--device", "cpu", "--json", str(tmp_path / "r.json"),
                           "--savedir", str(tmp_path / "inpainting_images")])
    for name in ["img_sample.png", "img_raw.png", "img_masked.png", "img_001.png", "img_991.png"]:
        assert (tmp_path / "inpainting_images" / name).is_file()
    assert set(res) >= {"recovery", "masked_input", "nearest_neighbour"}
    out = capsys.readouterr().out
    assert "recovery" in out and f"pictures in {tmp_path / 'inpainting_images'}" in out


@pytest.mark.slow  # bits/dim on the 10,000 test images, 1,000 ascent steps
def test_evaluate_figures_are_numbers(tmp_path, monkeypatch):
    import realnvp.evaluate as evaluate
    monkeypatch.setattr(evaluate, "NUM_SAMPLES", 20)
    res = figures(load(tiny_model(tmp_path)), "cpu", num_images=2)
    assert res["num_images"] == 2 and all(isinstance(res[k], float) for k in ("test_bpd", "inpaint_mse", "nn_mse"))
    assert "inpaint_mse" not in figures(load(tiny_model(tmp_path)), "cpu", num_images=0)   # no live protocol
    assert set(res["samples"]) == {"confidence", "counts", "fid"} and sum(res["samples"]["counts"]) == 20
    for rec in res["recorded"].values():
        assert isinstance(rec["num_images"], int) and isinstance(rec["mse"], float)


def test_draw_samples_are_images_and_follow_the_temperature():
    torch.manual_seed(0)
    model = perturb(build(TINY_SPLIT)).eval()
    cold, warm = draw_samples(model, 7, temperature=0.1, seed=3), draw_samples(model, 7, temperature=1.0, seed=3)
    assert cold.shape == (7, 1, 28, 28) and 0 <= cold.min() and cold.max() <= 1
    assert torch.equal(warm, draw_samples(model, 7, temperature=1.0, seed=3))   # seeded
    # the same z scaled by the temperature: a colder draw is closer to the image of z = 0
    centre = torch.sigmoid(model.sample(noise=torch.zeros(1, 784))).view(1, 1, 28, 28)
    assert (cold - centre).abs().mean() < (warm - centre).abs().mean()


def test_sample_script_scores_its_samples(tmp_path, capsys):
    from realnvp import sample
    scores = sample.main(["--load_path", str(tiny_model(tmp_path)), "--num_samples", "12", "--temperature", "0.7",
                          "--figure", str(tmp_path / "s.png"), "--device", "cpu"])
    assert (tmp_path / "s.png").is_file() and set(scores) == {"RealNVP samples", "real training digits",
                                                              "uniform noise"}
    assert sum(scores["RealNVP samples"]["counts"]) == 12
    assert "12 samples at temperature 0.7" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [["--hidden", "4,x"], ["--hidden", "4,4,4"], ["--arch", "multiscale", "--num_hidden", "8"],
                                   ["--arch", "mlp"], ["--arch", "conv"], ["--num-blocks", "3"], ["--log-dir", "x"],
                                   ["--load-path", "x.pt"], ["--res_blocks", "5"], ["--epochs", "0"]])
def test_bad_train_flags_exit_2(flags, capsys):
    from realnvp import train
    with pytest.raises(SystemExit) as err:
        train.main(flags + ["--limit", "100"])
    assert err.value.code == 2
    assert "error:" in capsys.readouterr().err.strip().splitlines()[-1]


# ---------------------------------------------------------------- bad inputs
# (a bad --load_path of inpainting.py and train.py --eval: the table of bad checkpoints in test_reliability.py)
@pytest.mark.parametrize("script, args, message", [
    ("realnvp/inpainting.py", ["--num_images", "99999999"], "--num_images 99999999 exceeds the 60000 train images"),
    ("realnvp/inpainting.py", ["--savedir", "{tmp}/file.txt/pics"], "cannot write"),
    ("realnvp/inpainting.py", ["--json", "{tmp}/file.txt/r.json"], "cannot write"),
    ("realnvp/inpainting.py", ["--figure", "{tmp}/file.txt/f.png"], "cannot write"),
    ("realnvp/evaluate.py", ["--num_images", "99999999"], "--num_images 99999999 exceeds the 10000 test images"),
    ("realnvp/evaluate.py", ["--num_images", "-5"], "argument --num_images: expected an integer >= 0, got -5"),
    ("realnvp/sample.py", ["--temperature", "0"], "argument --temperature: expected a finite number > 0, got 0"),
    ("realnvp/sample.py", ["--figure", "{tmp}/file.txt/s.png"], "cannot write"),
    ("realnvp/sample.py", ["--load_path", "{tmp}/none.pt"], "none.pt"),
    ("realnvp/train.py", SMOKE + ["--logdir", "{tmp}/run", "--model_dir", "{tmp}/file.txt/m"], "--model_dir"),
    ("realnvp/train.py", SMOKE + ["--logdir", "{tmp}/file.txt/run"], "run folder (--logdir)"),
    ("realnvp/train.py", SMOKE + ["--logdir", "{tmp}/run", "--img_save_dir", "{tmp}/file.txt/img"],
     "(--img_save_dir)"),
    ("realnvp/train.py", SMOKE + ["--logdir", "{tmp}/run", "--figures_dir", "{tmp}/file.txt/fig"], "--figures_dir"),
    ("realnvp/train.py", SMOKE + ["--logdir", "{tmp}/run", "--resume"], "shipped (weights-only) checkpoint"),
])
def test_bad_arguments_are_one_line(tmp_path, script, args, message):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "last.pt", KIND, TINY_SPLIT, model=build(TINY_SPLIT).state_dict())
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_one_line_error(run_script([script, *args, "--device", "cpu"], cwd=tmp_path), message)


def test_a_short_run_touches_neither_models_nor_figures(tmp_path):
    tracked = [SHIPPED, *sorted((REPO_ROOT / "figures").glob("realnvp_*"))]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tracked}
    done = run_script(["realnvp/train.py", *SMOKE, "--epochs", "1", "--logdir", str(tmp_path / "run")])
    assert done.returncode == 0, done.stderr[-1000:]
    assert "not copied to" in done.stdout and (tmp_path / "run" / "shipped.pt").is_file()
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tracked} == before


# ---------------------------------------------------------------- shipped model
@pytest.mark.slow
def test_shipped_checkpoint():
    assert SHIPPED.stat().st_size < 20 * 2 ** 20
    ckpt = load_checkpoint(SHIPPED, KIND)
    model = load(SHIPPED)
    with torch.no_grad():
        samples = torch.sigmoid(model.sample(4))
    assert samples.shape == (4, 784) and torch.isfinite(samples).all()
    bpd = evaluate_bpd(model, load_mnist(train=False)[0][:500])
    assert bpd < 1.85 and abs(bpd - ckpt.get("test_bpd", bpd)) < 0.1


@pytest.mark.slow
def test_shipped_conditional_mode_is_what_the_protocol_recorded():
    """The inpainting converges to bottom_mode: one pass over the graders' 100 training images gives the figure that
    `realnvp/inpainting.py` (1,000 gradient steps) recorded in figures/realnvp_inpainting_train.json."""
    import json
    recorded = json.loads((REPO_ROOT / "figures" / "realnvp_inpainting_train.json").read_text())
    raw, _, _ = masked_inputs(load_mnist(train=True)[0][:100], gen(0))
    mse = inpaint_mse(mode_inpainting(load(SHIPPED), raw), raw)["masked"]
    assert mse == pytest.approx(recorded["recovery"]["masked"], abs=5e-4)


def test_inpainting_estimate_scores_the_conditional_maximum(tmp_path, capsys):
    from realnvp import inpainting
    torch.manual_seed(0)
    model = perturb(build(TINY_SPLIT)).eval()
    path = save_checkpoint(tmp_path / "split.pt", KIND, TINY_SPLIT, model=model.state_dict())
    res = inpainting.main(["--load_path", str(path), "--num_images", "7", "--estimate", "--savedir", str(tmp_path / "p"),
                           "--device", "cpu"])
    raw, _, _ = masked_inputs(load_mnist(train=True)[0][:7], gen(0))
    assert res["recovery"]["masked"] == pytest.approx(inpaint_mse(mode_inpainting(model, raw), raw)["masked"])
    assert "conditional maximum (--estimate, one pass)" in capsys.readouterr().out
    assert not (tmp_path / "p").exists()   # no pictures, no picture folder
    multiscale = save_checkpoint(tmp_path / "ms.pt", KIND, TINY_MULTISCALE, model=build(TINY_MULTISCALE).state_dict())
    with pytest.raises(SystemExit) as err:
        inpainting.main(["--load_path", str(multiscale), "--estimate", "--savedir", str(tmp_path / "p")])
    assert err.value.code == 2 and "needs a split flow" in capsys.readouterr().err
