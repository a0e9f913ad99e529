"""Class-conditional VAE: the starter's layout, the loss, smoke runs of the script, its bad inputs, atomic
samples files, and the shipped checkpoint (slow)."""
import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

import vae.evaluate
from conftest import REPO_ROOT, assert_one_line_error, run_script
from mnistgen.checkpoint import half_state, load_checkpoint, save_checkpoint
from mnistgen.data import load_mnist
from mnistgen.files import ensure_writable
from vae import CVAE, DEFAULT_PATH, KIND, VAEConfig, build, generate_samples, load, main, negative_elbo
from vae.vae import IMG_SIZE, LABEL_SIZE, LATENT_SIZE, kl_divergence

CONFIG = VAEConfig(IMG_SIZE, LABEL_SIZE, LATENT_SIZE)


def one_hot(labels):
    return torch.nn.functional.one_hot(labels, 10).float()


class StarterCVAE(nn.Module):
    """The starter's CVAE.__init__ as handed out (names, shapes, Sequential layouts), with its TODO
    `recon_logstd = None` filled in as this project does: one learned scalar."""

    def __init__(self, img_size, label_size, latent_size, hidden_size=256):
        super().__init__()
        self.img_size, self.label_size = img_size, label_size
        self.latent_size, self.hidden_size = latent_size, hidden_size
        self.enc_img_fc = nn.Linear(int(np.prod(self.img_size)), self.hidden_size)
        self.enc_label_fc = nn.Linear(self.label_size, self.hidden_size)
        self.encoder = nn.Sequential(
            nn.Linear(2 * self.hidden_size, 2 * self.hidden_size), nn.ReLU(),
            nn.Linear(2 * self.hidden_size, 2 * self.hidden_size), nn.ReLU(),
        )
        self.z_mean = nn.Linear(2 * self.hidden_size, self.latent_size)
        self.z_logstd = nn.Linear(2 * self.hidden_size, self.latent_size)
        self.dec_latent_fc = nn.Linear(self.latent_size, self.hidden_size)
        self.dec_label_fc = nn.Linear(self.label_size, self.hidden_size)
        self.decoder = nn.Sequential(
            nn.Linear(2 * self.hidden_size, 2 * self.hidden_size), nn.ReLU(),
            nn.Linear(2 * self.hidden_size, 2 * self.hidden_size), nn.ReLU(),
            nn.Linear(2 * self.hidden_size, int(np.prod(self.img_size))), nn.Sigmoid(),
        )
        self.recon_logstd = nn.Parameter(torch.zeros(()))


# ---------------------------------------------------------------------------------------------- the model

def test_starter_layout_names_and_widths():
    model = CVAE((1, 28, 28), 10, 100)
    starter = StarterCVAE((1, 28, 28), 10, 100)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in starter.state_dict().items()}
    starter.load_state_dict(model.state_dict())  # strict: same keys, same shapes
    shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(256, 784), (256, 10), (512, 512), (512, 512), (100, 512), (100, 512),
                      (256, 100), (256, 10), (512, 512), (512, 512), (784, 512)]
    wide = CVAE((1, 28, 28), 10, 100, hidden_size=64)  # the trunks are 2 * hidden_size wide
    assert wide.encoder[0].weight.shape == (128, 128) and wide.decoder[4].weight.shape == (784, 128)


def test_shapes_and_ranges():
    torch.manual_seed(0)
    model = build(CONFIG)
    x, y = torch.rand(8, 1, 28, 28), one_hot(torch.arange(8))
    mean, logstd = model.encode(x, y)
    assert mean.shape == logstd.shape == (8, 100)
    recon = model.decode(mean, y)
    assert recon.shape == (8, 784) and 0 <= recon.min() and recon.max() <= 1
    imgs = model.sample(torch.randn(8, 100), y)
    assert imgs.shape == (8, 1, 28, 28) and 0 <= imgs.min() and imgs.max() <= 1
    assert not imgs.requires_grad


def test_temperature_scales_the_latent_and_travels_with_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build(VAEConfig(IMG_SIZE, LABEL_SIZE, LATENT_SIZE, temperature=0.5)).eval()
    z, y = torch.randn(4, 100), one_hot(torch.arange(4))
    assert torch.equal(model.sample(z, y), model.decode(0.5 * z, y).reshape(-1, 1, 28, 28))
    config = VAEConfig(IMG_SIZE, LABEL_SIZE, LATENT_SIZE, temperature=0.5)
    save_checkpoint(tmp_path / "t.pt", KIND, config, model=model.state_dict())
    loaded = load(tmp_path / "t.pt")
    assert loaded.temperature == 0.5 and not loaded.training
    assert torch.equal(loaded.sample(z, y), model.sample(z, y))
    assert load_checkpoint(tmp_path / "t.pt", KIND)["config"]["img_size"] == (1, 28, 28)


def test_generate_samples_layout():
    torch.manual_seed(0)
    model = build(CONFIG)
    samples = generate_samples(model, 3, "cpu")
    assert samples["imgs"].shape == (30, 1, 28, 28)
    assert samples["labels"].tolist() == list(range(10)) * 3  # rows of 10: column c = class c
    assert not model.training  # the starter's body puts the model in eval mode


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mean, logstd = torch.randn(5, 100), 0.3 * torch.randn(5, 100)
    q = torch.distributions.Normal(mean, logstd.exp())
    p = torch.distributions.Normal(torch.zeros(100), torch.ones(100))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(kl_divergence(mean, logstd), expected, atol=1e-4)


def test_elbo_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    images, labels = load_mnist(train=True)
    x, y = images[:64], one_hot(labels[:64])
    model = build(CONFIG)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(60):
        loss, stats = negative_elbo(model, x, y)
        first = stats["nelbo"] if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert stats["nelbo"] == pytest.approx(stats["recon"] + stats["kl"], rel=1e-5)
    assert stats["nelbo"] < first - 100  # nats per image


# ---------------------------------------------------------------------------------------------- the script

SMOKE = ["--limit", "256", "--batch_size", "64", "--num_epochs", "2", "--check_per_class", "0", "--kl_warmup", "1",
         "--device", "cpu"]


def _stamp(path):
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Two epochs on 256 images without the per-epoch classifier checks: once in one go, once stopped by
    --max_minutes after its first step (no --save_path) and then resumed -> (tmp dir, shipped checkpoint of
    the resumed run, models/vae.pt's bytes and mtime before)."""
    tmp = tmp_path_factory.mktemp("vae")
    before = _stamp(DEFAULT_PATH) if DEFAULT_PATH.exists() else None
    main(SMOKE + ["--logdir", str(tmp / "whole"), "--save_path", str(tmp / "whole.pt")])
    main(SMOKE + ["--logdir", str(tmp / "run"), "--max_minutes", "1e-9"])
    main(SMOKE + ["--logdir", str(tmp / "run"), "--resume", "--save_path", str(tmp / "vae.pt")])
    return tmp, tmp / "vae.pt", before


@pytest.mark.slow  # smoke trainings (tiny_run)
def test_smoke_run_logs_resumes_exactly_and_ships_only_where_asked(tiny_run):
    tmp, ckpt, before = tiny_run
    run = tmp / "run"
    assert (run / "last.pt").is_file() and (run / "curves.png").is_file()
    assert (run / "grids" / "epoch_002.png").is_file()
    assert (run / "shipped.pt").is_file()  # the interrupted run shipped into its run folder only ...
    if before is not None:
        assert _stamp(DEFAULT_PATH) == before  # ... never to models/vae.pt
    rows = [r.split(",") for r in (run / "log.csv").read_text().strip().splitlines()]
    whole = [r.split(",") for r in (tmp / "whole" / "log.csv").read_text().strip().splitlines()]
    assert rows[0][:3] == ["step", "epoch", "train_nelbo"] and rows[0] == whole[0]
    assert [r[:2] for r in whole[1:]] == [["4", "1"], ["8", "2"]]  # 256 images, batches of 64
    assert [r[:2] for r in rows[1:]] == [["4", "1"], ["8", "2"]]  # the stop's row gave way to the resumed run's
    assert rows[-1][:-1] == whole[-1][:-1]  # the last epoch's row, all but the minutes
    shipped, uninterrupted = load_checkpoint(ckpt, KIND), load_checkpoint(tmp / "whole.pt", KIND)
    assert shipped["epoch"] == 2 and shipped["model"]["recon_logstd"].dtype == torch.float16
    assert all(torch.equal(shipped["model"][k], v) for k, v in uninterrupted["model"].items())
    model = load(ckpt)
    assert model.recon_logstd.dtype == torch.float32 and model.temperature == VAEConfig.temperature


@pytest.mark.slow  # smoke trainings (tiny_run)
def test_eval_writes_the_assignment_format(tiny_run, tmp_path, monkeypatch, capsys):
    _, ckpt, _ = tiny_run
    monkeypatch.setattr(vae.evaluate, "try_scorer", lambda device, data_root: None)  # keep the test fast
    monkeypatch.chdir(tmp_path)
    main(["--eval", "--load_path", str(ckpt), "--device", "cpu"])
    samples = torch.load(tmp_path / "vae_generated_samples.pt", weights_only=True)
    assert set(samples) == {"imgs", "labels"}
    assert samples["imgs"].shape == (10000, 1, 28, 28) and samples["imgs"].dtype == torch.float32
    assert 0 <= samples["imgs"].min() and samples["imgs"].max() <= 1
    assert samples["labels"].dtype == torch.int64 and torch.bincount(samples["labels"]).tolist() == [1000] * 10
    model = load(ckpt)
    torch.manual_seed(42)  # --seed's default, set after the model is built: the starter's protocol
    assert torch.equal(samples["imgs"], generate_samples(model, 1000, "cpu")["imgs"])
    assert (tmp_path / "vae_generated_samples.png").is_file()  # the grid goes to the current folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae_generated_samples.png", "vae_generated_samples.pt"]
    assert "active units" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- bad inputs

def _tiny_checkpoint(path, edit=None):
    """A valid shipped-form checkpoint of a fresh model, optionally edited: edit(ckpt dict) in place."""
    torch.manual_seed(0)
    ckpt = {"kind": KIND, "config": dataclasses.asdict(CONFIG), "format": 1,
            "model": half_state(build(CONFIG).state_dict()), "epoch": 1}
    if edit is not None:
        edit(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.fixture
def eval_dir(tmp_path):
    """A current folder holding the samples file of an earlier --eval, which a failed run must leave alone."""
    previous = tmp_path / "vae_generated_samples.pt"
    torch.save({"imgs": torch.zeros(10, 1, 28, 28), "labels": torch.arange(10)}, previous)
    return tmp_path, previous, previous.read_bytes()


# a bad --load_path: the table of bad checkpoints in test_reliability.py
def test_unwritable_grid_path_is_one_line_and_keeps_the_previous_samples(eval_dir):
    folder, previous, data = eval_dir
    (folder / "file.txt").write_text("a file, not a folder")
    good = _tiny_checkpoint(folder / "good.pt")
    proc = run_script(["vae/vae.py", "--eval", "--device", "cpu", "--load_path", str(good),
                       "--grid_path", str(folder / "file.txt" / "g.png")], cwd=folder)
    assert_one_line_error(proc, "cannot write")
    assert previous.read_bytes() == data and not (folder / "vae_generated_samples.png").exists()


@pytest.mark.parametrize("case", ["resume from a weights-only checkpoint", "unwritable --save_path",
                                  "unwritable --logdir", "unwritable --figures_dir"])
def test_bad_training_outputs_are_one_line_errors(case, tmp_path):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    (tmp_path / "run").mkdir()
    _tiny_checkpoint(tmp_path / "run" / "last.pt")
    blocked = str(tmp_path / "file.txt" / "out")
    flags, message = {
        "resume from a weights-only checkpoint": (["--resume"], "not a training state"),
        "unwritable --save_path": (["--save_path", blocked + ".pt"], "cannot write"),
        "unwritable --logdir": (["--logdir", blocked], "cannot write"),
        "unwritable --figures_dir": (["--figures_dir", blocked], "cannot write"),
    }[case]
    before = _stamp(tmp_path / "run" / "last.pt")
    proc = run_script(["vae/vae.py", *SMOKE, "--logdir", str(tmp_path / "run"), *flags])
    assert_one_line_error(proc, message)
    assert _stamp(tmp_path / "run" / "last.pt") == before


# ---------------------------------------------------------------------------------------------- killed writes

def test_failed_samples_write_keeps_the_previous_file(eval_dir, monkeypatch):
    """torch.save dies half-way through the new samples file: the previous one is intact and no temporary is left."""
    folder, previous, data = eval_dir
    ckpt = _tiny_checkpoint(folder / "tiny.pt")
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.flush()
        f.truncate(f.tell() // 2)  # half a file on disk, then the "kill"
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    monkeypatch.chdir(folder)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        main(["--eval", "--load_path", str(ckpt), "--device", "cpu"])
    assert previous.read_bytes() == data
    assert torch.load(previous, weights_only=True)["imgs"].shape == (10, 1, 28, 28)
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow  # a fresh interpreter, killed
def test_kill_9_during_the_samples_write_keeps_the_previous_file(eval_dir):
    """`kill -9` once the temporary samples file holds some bytes: vae_generated_samples.pt is still the previous
    file (or, should the write win the race, the complete new one), never a truncated one; the next run's
    up-front check removes the dead temporary."""
    folder, previous, data = eval_dir
    ckpt = _tiny_checkpoint(folder / "tiny.pt")
    inode = previous.stat().st_ino
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "vae" / "vae.py"), "--eval", "--load_path", str(ckpt),
                             "--device", "cpu"], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial, deadline = [], time.time() + 120
    try:  # poll until the temporary has bytes in it (or the new file is already in place)
        while not partial and time.time() < deadline and proc.poll() is None and previous.stat().st_ino == inode:
            partial = [e.path for e in os.scandir(folder) if e.name.endswith(".tmp") and e.stat().st_size > 0]
            time.sleep(0.001)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    samples = torch.load(previous, weights_only=True)  # loadable, whenever the kill came
    if partial:  # killed mid-write (the usual case: the write takes tens of milliseconds)
        assert previous.read_bytes() == data
    else:
        assert previous.read_bytes() == data or samples["imgs"].shape == (10000, 1, 28, 28)
    ensure_writable(previous)  # what the next --eval does first
    assert not [e.name for e in os.scandir(folder) if e.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------- shipped model

@pytest.mark.slow
def test_shipped_weights_load_into_the_starter_module():
    ckpt = torch.load(DEFAULT_PATH, weights_only=True)
    assert ckpt["kind"] == KIND and ckpt["config"] == dataclasses.asdict(CONFIG)
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values())
    assert DEFAULT_PATH.stat().st_size < 20e6
    starter = StarterCVAE((1, 28, 28), 10, 100)
    starter.load_state_dict({k: v.float() for k, v in ckpt["model"].items()})  # strict
    ours = load(DEFAULT_PATH)
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in starter.state_dict().items())


@pytest.mark.slow
def test_training_with_checks_picks_a_finalist(tmp_path, capsys):
    """The per-epoch classifier checks, their snapshots and the end-of-run selection (uses models/classifier.pt)."""
    flags = ["--limit", "256", "--batch_size", "64", "--check_per_class", "5", "--finalists", "1", "--num_epochs", "2",
             "--device", "cpu", "--logdir", str(tmp_path / "run"), "--save_path", str(tmp_path / "vae.pt")]
    main(flags)
    out = capsys.readouterr().out
    assert out.count("finalist epoch") in (1, 2) and "ships epoch" in out
    assert len(list((tmp_path / "run" / "snapshots").iterdir())) == 2
    assert load_checkpoint(tmp_path / "vae.pt", KIND)["epoch"] in (1, 2)
