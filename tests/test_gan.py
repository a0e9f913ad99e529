"""Conditional GAN: fixed architectures, sampling range, the training Task (step, schedule, keep-the-best,
exact resume), the CLI (train, resume, --eval output format, bad input) and the shipped checkpoint."""
import dataclasses
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import assert_one_line_error, run_script
from gan.evaluate import recalibrate_bn, seeded_samples
from gan.gan import (DEFAULT_PATH, HIDDEN_SIZE, IMG_DIM, LABEL_DIM, LATENT_DIM, Discriminator, GANConfig, Generator,
                     build_parser, generate_samples, load, main)
from gan.train import GanTask, epoch_rank, lr_decay_epochs
from classifier.model import DEFAULT_PATH as CLASSIFIER_PATH
from mnistgen.checkpoint import load_checkpoint, load_state, save_checkpoint
from mnistgen.files import ensure_writable
from mnistgen.utils import REPO_ROOT

# the starter's parameter names: its `checkpoint['g']` / `['d']` must load into our classes and back
G_KEYS = {"latent_fc", "latent_bn", "label_fc", "label_bn", "fc1", "bn1", "fc2", "bn2", "fc3"}
D_KEYS = {"img_fc", "label_fc", "fc2", "bn2", "fc3", "bn3", "fc4"}
CONFIG = GANConfig(LATENT_DIM, LABEL_DIM, IMG_DIM, HIDDEN_SIZE)


def nets():
    torch.manual_seed(0)
    return Generator(LATENT_DIM, LABEL_DIM, IMG_DIM), Discriminator(LABEL_DIM, IMG_DIM)


def save_tiny(path, edit=None):
    """A gan checkpoint of freshly initialised nets, in the shipped form, optionally edited first."""
    g, d = nets()
    ckpt = dict(kind="gan", config=dataclasses.asdict(CONFIG), format=1, g=g.state_dict(), d=d.state_dict())
    if edit is not None:
        edit(ckpt)
    torch.save(ckpt, path)
    return path


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
    path = save_checkpoint(tmp_path / "gan.pt", "gan", dataclasses.replace(CONFIG, truncation=0.7),
                           g=g.state_dict(), d=d.state_dict())
    loaded = load(path)
    assert loaded.truncation == 0.7 and not loaded.training
    assert set(torch.load(path, weights_only=True)["g"]) == set(nets()[0].state_dict())  # no extra keys


def test_generate_samples_format_and_seeding():
    g, _ = nets()
    s = generate_samples(g, 3, "cpu")
    assert s["imgs"].shape == (30, 1, 28, 28) and s["labels"].tolist() == list(range(10)) * 3
    assert not g.training  # the starter's body puts the generator in eval mode
    state = torch.get_rng_state()
    a, b = seeded_samples(g, 7, "cpu", n_per_class=2), seeded_samples(g, 7, "cpu", n_per_class=2)
    assert torch.equal(a["imgs"], b["imgs"]) and torch.equal(torch.get_rng_state(), state)  # no global reseeding


def tiny_task(**flags):
    args = build_parser().parse_args([f"--{k}={v}" for k, v in flags.items()])
    images, labels = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    torch.manual_seed(0)
    return GanTask(CONFIG, args, images, labels, torch.device("cpu"), scored=False)


def test_one_step_changes_both_nets_and_losses_are_finite():
    task = tiny_task(batch_size=32)
    before = {name: [p.clone() for p in m.parameters()] for name, m in dict(g=task.g, d=task.d, ema=task.g_ema).items()}
    batch = next(iter(task.batches(0, torch.Generator().manual_seed(0))))
    assert batch[0].min() >= -1 and batch[0].max() <= 1 and batch[0].min() < 0  # the tanh range
    out = task.train_step(batch)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert 0 < out["d_real"] < 1 and 0 < out["d_fake"] < 1
    assert all(not torch.equal(a, b) for a, b in zip(before["g"], task.g.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before["d"], task.d.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before["ema"], task.g_ema.parameters()))
    assert all(p.requires_grad for p in task.d.parameters())
    shipped = task.shipped_state()
    assert set(shipped) == {"g", "d"} and shipped["g"]["fc3.weight"].dtype == torch.float16


def test_lr_decays_linearly_over_the_last_epochs():
    task = tiny_task(batch_size=32, num_epochs=6, lr_decay_epochs=3)  # 2 steps per epoch
    per_epoch = [task.lr_scale(2 * e) for e in range(6)]
    assert per_epoch == [1.0, 1.0, 1.0, 3 / 4, 2 / 4, 1 / 4]  # epochs 4-6: (6 - epoch) / (3 + 1), 0-based
    assert task.lr_scale(7) == task.lr_scale(6)
    assert tiny_task(batch_size=32, lr_decay_epochs=0).lr_scale(59) == 1.0  # the last step of 30 epochs


def test_lr_decay_follows_num_epochs_by_default():
    """The shipped schedule (the last 15 of 30 epochs) for the bare command, half the epochs otherwise."""
    parse = build_parser().parse_args
    assert lr_decay_epochs(parse([])) == 15 and lr_decay_epochs(parse(["--num_epochs", "2"])) == 1
    assert lr_decay_epochs(parse(["--num_epochs", "2", "--lr_decay_epochs", "0"])) == 0
    assert tiny_task(batch_size=32, num_epochs=6).decay_epochs == 3


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


def test_keep_the_best_rule():
    """Among epochs at >= min_accuracy the lowest per-class FID wins; below it, the higher accuracy."""
    def better(a, b):
        return epoch_rank(a, 0.99) < epoch_rank(b, 0.99)
    ok_low, ok_high = dict(accuracy=0.995, class_fid=2.0), dict(accuracy=0.992, class_fid=3.0)
    bad = dict(accuracy=0.98, class_fid=1.0)
    assert better(ok_high, bad) and not better(bad, ok_high)
    assert better(ok_low, ok_high) and not better(ok_high, ok_low)
    assert better(dict(accuracy=0.985, class_fid=9.0), bad)  # below the bar: accuracy decides
    assert tiny_task().rank({}) is None  # no classifier: the last evaluation is kept


def _fingerprints():
    shipped = [DEFAULT_PATH, REPO_ROOT / "figures" / "gan_grid.png", REPO_ROOT / "figures" / "gan_curves.png"]
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in shipped if p.is_file()}


@pytest.mark.slow  # smoke trainings and an evaluation
def test_train_resume_eval(tmp_path, monkeypatch):
    """A 2-epoch run equals 1 epoch + --resume (weights, EMA, log); --save_path/--figures_dir ship; --eval."""
    import gan.evaluate
    import gan.train
    monkeypatch.setattr(gan.train, "classifier_shipped", lambda: False)
    monkeypatch.setattr(gan.evaluate, "classifier_shipped", lambda: False)  # scoring is tested on the shipped model
    shipped = _fingerprints()
    run = ["--limit", "256", "--batch_size", "64", "--lr_decay_epochs", "0"]
    main(run + ["--num_epochs", "2", "--logdir", str(tmp_path / "whole")])
    main(run + ["--num_epochs", "1", "--logdir", str(tmp_path / "run")])
    assert _fingerprints() == shipped and (tmp_path / "run" / "shipped.pt").is_file()  # short runs never ship
    main(run + ["--num_epochs", "2", "--logdir", str(tmp_path / "run"), "--resume",
                "--save_path", str(tmp_path / "gan.pt"), "--figures_dir", str(tmp_path / "fig")])
    whole, resumed = (load_checkpoint(tmp_path / d / "last.pt", "gan") for d in ("whole", "run"))
    for key in ("g", "d"):
        assert all(torch.equal(a, b) for a, b in zip(whole["modules"][key].values(), resumed["modules"][key].values()))
    assert all(torch.equal(a, b) for a, b in zip(whole["extra"]["g_ema"].values(), resumed["extra"]["g_ema"].values()))
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 3 and log[0].startswith("step,epoch,d_loss,g_loss,d_real,d_fake")
    whole_log = (tmp_path / "whole" / "log.csv").read_text().splitlines()
    assert [r.split(",")[:6] for r in log] == [r.split(",")[:6] for r in whole_log]
    assert (tmp_path / "run" / "grid_epoch002.png").is_file()
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {"gan_curves.png", "gan_grid.png"}
    ckpt = torch.load(tmp_path / "gan.pt", weights_only=True)
    assert ckpt["kind"] == "gan" and {"g", "d"} <= set(ckpt) and "optimizers" not in ckpt
    assert ckpt["config"] == dataclasses.asdict(CONFIG) and ckpt["config"]["truncation"] == 0.8

    monkeypatch.chdir(tmp_path)
    main(["--eval", "--load_path", str(tmp_path / "gan.pt")])
    samples = torch.load(tmp_path / "gan_generated_samples.pt", weights_only=True)
    assert samples["imgs"].shape == (10000, 1, 28, 28) and samples["imgs"].dtype == torch.float32
    assert 0 <= samples["imgs"].min() and samples["imgs"].max() <= 1
    assert torch.equal(samples["labels"], torch.arange(10).repeat(1000))
    assert (tmp_path / "gan_generated_samples.png").is_file()  # the grid goes to the current folder, beside the samples


@pytest.mark.parametrize("argv, message", [
    (["--lr_decay_epochs", "99", "--num_epochs", "3"], "--lr_decay_epochs"),
    (["--limit", "10"], "--limit"),
    (["--eval_samples", "15"], "--eval_samples"),
    (["--eval_samples", "10"], "at least 20"),
    (["--eval", "--figures_dir", "x"], "--grid_path"),
    (["--grid_path", "x.png"], "are for --eval"),
    (["--load_path", "x.pt"], "are for --eval"),
])
def test_inconsistent_flags_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and message in err and len(err.splitlines()) == 1


def test_bad_flag_value_exits_2():
    assert_one_line_error(run_script(["gan/gan.py", "--lr", "-1"]), "--lr")


# ---------------------------------------------------------------- bad input, nothing overwritten
# (a bad --load_path: the table of bad checkpoints in test_reliability.py)
def previous_outputs(folder):
    """An earlier --eval's outputs in `folder`; returns {path: bytes} to compare after."""
    old = {folder / "gan_generated_samples.pt": b"earlier samples",
           folder / "gan_generated_samples.png": b"earlier grid"}
    for path, data in old.items():
        path.write_bytes(data)
    return old


def test_unwritable_grid_is_one_line_and_keeps_the_previous_samples(tmp_path):
    old = previous_outputs(tmp_path)
    (tmp_path / "file.txt").write_text("a file, not a folder")
    proc = run_script(["gan/gan.py", "--eval", "--load_path", str(save_tiny(tmp_path / "g.pt")),
                       "--grid_path", str(tmp_path / "file.txt" / "grid.png")], cwd=tmp_path)
    assert_one_line_error(proc, "cannot write")
    assert all(path.read_bytes() == data for path, data in old.items())


TRAIN = ["gan/gan.py", "--limit", "256", "--batch_size", "64", "--eval_samples", "100", "--lr_decay_epochs", "0",
         "--num_epochs", "1"]


@pytest.mark.parametrize("flag", ["--save_path", "--logdir", "--figures_dir"])
def test_unwritable_training_outputs_fail_before_training(flag, tmp_path):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    run = ["--logdir", str(tmp_path / "run")] if flag != "--logdir" else []
    proc = run_script(TRAIN + run + [flag, str(tmp_path / "file.txt" / "out")])
    assert_one_line_error(proc, "cannot write")
    assert not (tmp_path / "run" / "log.csv").exists()


def test_resume_from_a_weights_only_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    last = save_tiny(tmp_path / "run" / "last.pt")  # the shipped form: no optimizers, no step
    before = last.read_bytes()
    proc = run_script(TRAIN + ["--logdir", str(tmp_path / "run"), "--resume"])
    assert_one_line_error(proc, "weights-only")
    assert last.read_bytes() == before
    assert_one_line_error(run_script(TRAIN + ["--logdir", str(tmp_path / "empty"), "--resume"]), "no checkpoint at")


@pytest.mark.slow  # two fresh processes score their epoch with the shipped classifier
def test_short_run_leaves_models_and_figures_alone_and_resumes(tmp_path):
    before = _fingerprints()
    first = run_script(TRAIN + ["--logdir", str(tmp_path / "run")])
    assert first.returncode == 0, first.stderr[-2000:]
    assert "not copied to" in first.stdout and (tmp_path / "run" / "shipped.pt").is_file()
    resumed = run_script(TRAIN + ["--num_epochs", "2", "--logdir", str(tmp_path / "run"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 3
    assert _fingerprints() == before


KILL_MID_WRITE = """
import os, signal, sys, torch
real_save = torch.save
def dying_save(obj, f, *args, **kwargs):  # the process is killed while the samples file is half written
    real_save(obj, f, *args, **kwargs)
    if isinstance(f, (str, os.PathLike)):
        os.truncate(f, os.path.getsize(f) // 2)
    else:
        f.flush()
        f.truncate(f.tell() // 2)
        f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
from gan.gan import main
main(sys.argv[1:])
"""


@pytest.mark.slow  # a fresh interpreter, killed
def test_a_kill_while_writing_the_samples_leaves_the_previous_file(tmp_path):
    samples = tmp_path / "gan_generated_samples.pt"
    torch.save(dict(imgs=torch.zeros(10, 1, 28, 28), labels=torch.arange(10)), samples)
    before = samples.read_bytes()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    argv = ["--eval", "--load_path", str(save_tiny(tmp_path / "g.pt"))]
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert samples.read_bytes() == before  # the killed write went to a temporary beside it
    ensure_writable(samples)  # the next run's check removes the temporary the kill left
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# ---------------------------------------------------------------- the shipped checkpoint
shipped = pytest.mark.skipif(not DEFAULT_PATH.is_file(), reason="models/gan.pt not shipped yet")


@pytest.mark.slow
@shipped
def test_shipped_checkpoint_format():
    assert DEFAULT_PATH.stat().st_size < 20e6
    ckpt = torch.load(DEFAULT_PATH, weights_only=True)
    assert ckpt["kind"] == "gan" and {"g", "d"} <= set(ckpt)
    assert ckpt["config"] == dict(latent_dim=100, label_dim=10, img_dim=[1, 28, 28], hidden_size=256, truncation=0.8)
    starter_g, starter_d = nets()
    starter_g.load_state_dict(load(DEFAULT_PATH).state_dict())  # loads into the starter's layer layout
    load_state(starter_d, ckpt["d"])


@pytest.mark.slow
@pytest.mark.skipif(not CLASSIFIER_PATH.is_file(), reason="models/classifier.pt not shipped yet")
def test_scoring_an_epoch_leaves_the_training_rng_alone(tmp_path, monkeypatch):
    """The first evaluation builds the classifier scorer (a fresh CNN draws its initialisation): that must
    not move the global RNG, or a resumed run (which builds it again) would differ from an uninterrupted one."""
    import classifier.model
    monkeypatch.setattr(classifier.model, "_SCORERS", {})
    task = tiny_task(batch_size=32, eval_samples=100)
    task.scored = True
    state = torch.get_rng_state()
    metrics = task.evaluate(2, tmp_path)
    assert set(metrics) == {"accuracy", "class_fid", "fid"} and torch.equal(torch.get_rng_state(), state)


