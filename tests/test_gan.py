"""Conditional GAN: fixed architectures, sampling range, a training step, the CLI (train, resume,
--eval output format, bad input) and the quality of the shipped checkpoint."""
import functools
import subprocess
import sys

import pytest
import torch

from gan.gan import (DEFAULT_PATH, IMG_DIM, LABEL_DIM, LATENT_DIM, Discriminator, GanTrainer, Generator,
                     generate_samples, is_better, load_gan, main, recalibrate_bn, report)
from mnistgen.checkpoint import CheckpointError, save_checkpoint
from mnistgen.utils import REPO_ROOT

# the starter's parameter names: its `checkpoint['g']` / `['d']` must load into our classes and back
G_KEYS = {"latent_fc", "latent_bn", "label_fc", "label_bn", "fc1", "bn1", "fc2", "bn2", "fc3"}
D_KEYS = {"img_fc", "label_fc", "fc2", "bn2", "fc3", "bn3", "fc4"}


def nets():
    torch.manual_seed(0)
    return Generator(LATENT_DIM, LABEL_DIM, IMG_DIM), Discriminator(LABEL_DIM, IMG_DIM)


def test_shapes_layers_and_init():
    g, d = nets()
    z, y = torch.randn(16, 100), torch.eye(10).repeat(2, 1)[:16]
    assert g(z, y).shape == (16, 1, 28, 28)
    assert d(g(z, y), y).shape == (16,)
    assert {k.split(".")[0] for k in g.state_dict()} == G_KEYS
    assert {k.split(".")[0] for k in d.state_dict()} == D_KEYS
    shapes = [tuple(m.weight.shape) for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert shapes == [(256, 100), (256, 10), (512, 512), (1024, 512), (784, 1024)]
    shapes = [tuple(m.weight.shape) for m in d.modules() if isinstance(m, torch.nn.Linear)]
    assert shapes == [(1024, 784), (1024, 10), (512, 2048), (256, 512), (1, 256)]
    for m in list(g.modules()) + list(d.modules()):
        if isinstance(m, torch.nn.Linear):
            assert abs(m.weight.std().item() - 0.02) < 0.004 and m.bias.abs().max() == 0


def test_sample_range_and_no_grad():
    g, _ = nets()
    g.fc3.bias.data.fill_(5.0)  # push tanh into saturation: the range must still hold
    x = g.sample(torch.randn(20, 100), torch.eye(10).repeat(2, 1))
    assert x.shape == (20, 1, 28, 28) and not x.requires_grad
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.99


def test_truncation_scales_z_and_travels_with_the_checkpoint(tmp_path):
    g, d = nets()
    g.eval()
    z, label = torch.randn(8, 100), torch.eye(10)[:8]
    g.truncation = 0.5
    half = g.sample(z, label)
    g.truncation = 1.0
    assert torch.allclose(half, g.sample(0.5 * z, label), atol=1e-6)
    g.truncation = 0.0  # no z at all: one image per class
    x = g.sample(torch.randn(4, 100), torch.eye(10)[[3, 3, 3, 3]])
    assert torch.allclose(x[0], x[1:], atol=1e-6)
    g.truncation = 0.7
    path = tmp_path / "gan.pt"
    from gan.gan import config_of
    save_checkpoint(path, "gan", config_of(g), g=g.state_dict(), d=d.state_dict())
    assert load_gan(path)[0].truncation == 0.7
    assert set(torch.load(path, weights_only=True)["g"]) == set(nets()[0].state_dict())  # no extra keys


def test_generate_samples_format():
    g, _ = nets()
    s = generate_samples(g, 3, "cpu")
    assert s["imgs"].shape == (30, 1, 28, 28) and s["labels"].tolist() == list(range(10)) * 3
    assert not g.training  # the starter's body puts the generator in eval mode


def test_one_step_changes_both_nets_and_losses_are_finite():
    g, d = nets()
    trainer = GanTrainer(g, d, torch.device("cpu"), label_smoothing=0.1)
    before_g = [p.clone() for p in g.parameters()]
    before_d = [p.clone() for p in d.parameters()]
    before_ema = [p.clone() for p in trainer.g_ema.parameters()]
    out = trainer.train_step(torch.rand(32, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (32,)))
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert 0 < out["d_real"] < 1 and 0 < out["d_fake"] < 1
    assert all(not torch.equal(a, b) for a, b in zip(before_g, g.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, d.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_ema, trainer.g_ema.parameters()))
    assert all(p.requires_grad for p in d.parameters())


def test_recalibrated_bn_makes_eval_mode_match_train_mode():
    g, _ = nets()
    with torch.no_grad():
        g.fc1.bias.add_(1.0)  # move activations away from the default running stats (mean 0, var 1)
    recalibrate_bn(g, "cpu", n_batches=5, batch_size=500)
    z, y = torch.randn(1000, 100), torch.eye(10).repeat(100, 1)
    with torch.no_grad():
        eval_out = g.eval()(z, y)
        train_out = g.train()(z, y)
    assert (eval_out - train_out).abs().mean() < 0.02


def test_train_resume_eval_cli(tmp_path, monkeypatch, capsys):
    import gan.gan
    monkeypatch.setattr(gan.gan, "_try_scorer", lambda *a: None)  # scoring is tested on the shipped model
    run = ["--limit", "256", "--batch_size", "64", "--logdir", str(tmp_path / "run"), "--no_progress",
           "--save_path", str(tmp_path / "gan.pt"), "--figures_dir", str(tmp_path / "fig"), "--lr_decay_epochs", "0"]
    main(run + ["--num_epochs", "1"])
    main(run + ["--num_epochs", "2", "--resume"])
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 3 and log[0].startswith("epoch,lr,d_loss,g_loss,d_real,d_fake")
    assert (tmp_path / "run" / "grid_epoch002.png").is_file() and (tmp_path / "fig" / "gan_curves.png").is_file()
    ckpt = torch.load(tmp_path / "gan.pt", weights_only=True)
    assert ckpt["kind"] == "gan" and {"g", "d"} <= set(ckpt) and "g_optimizer" not in ckpt

    monkeypatch.chdir(tmp_path)
    main(["--eval", "--load_path", str(tmp_path / "gan.pt"), "--figures_dir", str(tmp_path / "fig")])
    samples = torch.load(tmp_path / "gan_generated_samples.pt", weights_only=True)
    assert samples["imgs"].shape == (10000, 1, 28, 28) and samples["imgs"].dtype == torch.float32
    assert 0 <= samples["imgs"].min() and samples["imgs"].max() <= 1
    assert torch.equal(samples["labels"], torch.arange(10).repeat(1000))
    assert (tmp_path / "fig" / "gan_grid.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--eval", "--load_path", "no/such/file.pt"], "no checkpoint at"),
    (["--eval", "--load_path", "WRONG_KIND"], "holds a vae checkpoint"),
    (["--lr_decay_epochs", "99", "--num_epochs", "3"], "--lr_decay_epochs"),
    (["--limit", "10"], "--limit"),
    (["--resume", "--logdir", "EMPTY"], "no checkpoint at"),
])
def test_bad_input_is_one_line_exit_2(argv, message, tmp_path, capsys):
    wrong = tmp_path / "vae.pt"
    save_checkpoint(wrong, "vae", {}, model={})
    argv = [str(wrong) if a == "WRONG_KIND" else str(tmp_path) if a == "EMPTY" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and message in err and len(err.splitlines()) == 1


def test_bad_flag_value_exits_2():
    proc = subprocess.run([sys.executable, "gan/gan.py", "--lr", "-1"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--lr" in proc.stderr


def test_weights_that_do_not_fit_are_refused(tmp_path):
    g, d = nets()
    sd = g.state_dict()
    sd["fc3.weight"] = sd["fc3.weight"][:100]
    save_checkpoint(tmp_path / "bad.pt", "gan", dict(latent_dim=100, label_dim=10, img_dim=[1, 28, 28],
                                                     hidden_size=256), g=sd, d=d.state_dict())
    with pytest.raises(CheckpointError, match="do not match"):
        load_gan(tmp_path / "bad.pt")


def test_best_checkpoint_rule():
    ok_low, ok_high = dict(accuracy=0.995, class_fid=2.0), dict(accuracy=0.992, class_fid=3.0)
    bad = dict(accuracy=0.98, class_fid=1.0)
    assert is_better(bad, None, 0.99) and is_better(ok_high, bad, 0.99) and not is_better(bad, ok_high, 0.99)
    assert is_better(ok_low, ok_high, 0.99) and not is_better(ok_high, ok_low, 0.99)
    assert is_better(dict(accuracy=0.985, class_fid=9.0), bad, 0.99)  # below the bar: accuracy decides


# ---------------------------------------------------------------- the shipped checkpoint
shipped = pytest.mark.skipif(not DEFAULT_PATH.is_file(), reason="models/gan.pt not shipped yet")


@shipped
def test_shipped_checkpoint_format():
    assert DEFAULT_PATH.stat().st_size < 20e6
    ckpt = torch.load(DEFAULT_PATH, weights_only=True)
    assert ckpt["kind"] == "gan" and {"g", "d"} <= set(ckpt)
    g, d, _ = load_gan(DEFAULT_PATH)
    starter_g, starter_d = nets()
    starter_g.load_state_dict(g.state_dict())  # loads into the starter's layer layout
    starter_d.load_state_dict(d.state_dict())


@functools.lru_cache(maxsize=1)
def _shipped_accuracy():
    from classifier.model import get_scorer
    g, _, _ = load_gan(DEFAULT_PATH)
    torch.manual_seed(0)
    samples = generate_samples(g, 100, "cpu")
    return get_scorer("cpu").score(samples["imgs"], samples["labels"])


@shipped
def test_shipped_generator_meets_the_issue_target():
    score = _shipped_accuracy()  # 1,000 samples through the graders' generate_samples
    assert score["accuracy"] >= 0.99, score["per_class_accuracy"]
    assert score["class_fid"] < 3.6 * 1.5  # 100 per class inflates FID; the collapsed reference is 3.6 at 1,000


@shipped
def test_report_rows():
    rows = report("cpu")
    assert len(rows) == 4 and all(len(r) == 3 and all(isinstance(x, str) for x in r) for r in rows)
