"""Data loading, checkpoint I/O, the scoring classifier and the CLI error paths."""
import shutil
import subprocess
import sys
import sysconfig

import pytest
import torch

from classifier.model import (DEFAULT_PATH, MnistClassifier, check_samples, collapsed_reference,
                              frechet_distance, gaussian_stats, get_scorer)
from mnistgen import data
from mnistgen.checkpoint import CheckpointError, half_state, load_checkpoint, load_state, save_checkpoint
from mnistgen.utils import REPO_ROOT, UserError

needs_classifier = pytest.mark.skipif(not DEFAULT_PATH.is_file(), reason="models/classifier.pt not shipped yet")


def run_script(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- data
def test_mnist_shapes_and_range():
    images, labels = data.load_mnist(train=False)
    assert images.shape == (10000, 1, 28, 28) and labels.shape == (10000,)
    assert images.dtype == torch.float32 and 0 <= images.min() and images.max() == 1
    assert sorted(labels.unique().tolist()) == list(range(10))


def test_batches_cover_everything_once():
    x, y = torch.arange(10).float(), torch.arange(10)
    seen = torch.cat([b for _, b in data.batches(x, y, 3, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))


def test_checksum_mismatch_is_refused(tmp_path):
    source = data.raw_dir(data.find_root())
    raw = data.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in data.SHA256:
        shutil.copy(source / name, raw / name)
    data.verify(raw)  # a faithful copy passes
    with open(raw / "t10k-labels-idx1-ubyte", "r+b") as f:
        f.seek(100)
        f.write(b"\x07")
    with pytest.raises(data.DataError, match="checksum"):
        data.verify(raw)


def test_missing_data_without_fetch_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="mnistgen.data --download"):
        data.find_root(tmp_path / "nowhere", fetch=False)


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_in_fp16(tmp_path):
    model = MnistClassifier(width=4, feature_dim=8)
    path = save_checkpoint(tmp_path / "c.pt", "classifier", model.config, model=half_state(model.state_dict()))
    ckpt = load_checkpoint(path, "classifier")
    clone = load_state(MnistClassifier(**ckpt["config"]), ckpt["model"])
    for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        assert b.dtype == a.dtype, name
        assert torch.allclose(a.float(), b.float(), atol=1e-3, rtol=1e-3), name
    assert not list(tmp_path.glob("*.tmp")), "atomic save leaves no temporary file"


def test_checkpoint_errors(tmp_path):
    save_checkpoint(tmp_path / "vae.pt", "vae", {}, model={})
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt", "vae")
    with pytest.raises(CheckpointError, match="no checkpoint in folder"):
        load_checkpoint(tmp_path, "gan", names=("gan.pt",))
    assert load_checkpoint(tmp_path, "vae", names=("vae.pt",))["kind"] == "vae"
    with pytest.raises(CheckpointError, match="holds a vae checkpoint"):
        load_checkpoint(tmp_path / "vae.pt", "gan")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "vae.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt", "vae")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_checkpoint(tmp_path / "foreign.pt", "vae")
    with pytest.raises(CheckpointError, match="do not match"):
        load_state(MnistClassifier(width=4), {"bogus": torch.zeros(1)})


# ---------------------------------------------------------------- classifier and scoring
def test_frechet_distance_of_identical_and_shifted_gaussians():
    feats = torch.randn(2000, 5, generator=torch.Generator().manual_seed(0))
    stats = gaussian_stats(feats)
    assert abs(frechet_distance(stats, stats)) < 1e-6
    shifted = gaussian_stats(feats + 3.0)
    assert frechet_distance(stats, shifted) == pytest.approx(5 * 9.0, rel=1e-6)


def test_check_samples_rejects_bad_input():
    good = dict(imgs=torch.rand(4, 1, 28, 28), labels=torch.arange(4))
    check_samples(good)
    bad = [dict(imgs=torch.rand(4, 28, 28), labels=torch.arange(4)),
           dict(imgs=torch.rand(4, 1, 28, 28) * 2, labels=torch.arange(4)),
           dict(imgs=torch.full((4, 1, 28, 28), float("nan")), labels=torch.arange(4)),
           dict(imgs=torch.rand(4, 1, 28, 28), labels=torch.rand(4)),
           dict(imgs=torch.rand(4, 1, 28, 28), labels=torch.arange(3)),
           dict(imgs=torch.rand(4, 1, 28, 28))]
    for samples in bad:
        with pytest.raises(UserError):
            check_samples(samples)


@needs_classifier
def test_shipped_classifier_on_real_digits_and_noise():
    scorer = get_scorer("cpu")
    images, labels = data.load_mnist(train=False)
    real = scorer.score(images[:1000], labels[:1000])
    assert real["accuracy"] > 0.99
    g = torch.Generator().manual_seed(0)
    noise = scorer.score(torch.rand(1000, 1, 28, 28, generator=g), torch.randint(0, 10, (1000,), generator=g))
    assert noise["accuracy"] < 0.25
    # a held-out half of the test set is near the test statistics; noise is far away
    assert real["fid"] < 0.05 * noise["fid"]
    collapsed = scorer.score(*collapsed_reference(images, labels))
    assert collapsed["accuracy"] > 0.95 and collapsed["class_fid"] > 3 * real["class_fid"]


def test_classifier_train_smoke(tmp_path):
    from classifier.train import main
    main(["--epochs", "1", "--limit", "256", "--width", "4", "--save_path", str(tmp_path / "c.pt"), "--device", "cpu"])
    assert load_checkpoint(tmp_path / "c.pt", "classifier")["config"]["width"] == 4


# ---------------------------------------------------------------- command-line errors
def test_evaluate_cli_errors_are_one_line(tmp_path):
    missing = run_script("classifier/evaluate.py", str(tmp_path / "nothing.pt"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "no samples file" in missing.stderr
    torch.save(dict(imgs=torch.rand(3, 1, 28, 28) + 1, labels=torch.arange(3)), tmp_path / "bad.pt")
    bad = run_script("classifier/evaluate.py", str(tmp_path / "bad.pt"))
    assert bad.returncode == 2 and "[0, 1]" in bad.stderr and "Traceback" not in bad.stderr


def test_classifier_test_mode_rejects_wrong_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "vae.pt", "vae", {}, model={})
    out = run_script("classifier/train.py", "--test", "--load_path", str(tmp_path / "vae.pt"))
    assert out.returncode == 2 and "holds a vae checkpoint" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------- scripts without installing the project
ENTRY_SCRIPTS = ["ebm/main.py", "realnvp/train.py", "realnvp/inpainting.py", "realnvp/evaluate.py", "vae/vae.py",
                 "vae/figures.py", "gan/gan.py", "classifier/train.py", "classifier/evaluate.py",
                 "benchmarks/inpainting_references.py"]


def test_entry_scripts_run_without_the_editable_install():
    """`python ebm/main.py ...` from a plain clone: `-S` skips site-packages' .pth files (the editable
    install), PYTHONPATH still provides torch and friends; every script must import and print --help."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    for script in ENTRY_SCRIPTS:
        done = subprocess.run([sys.executable, "-S", script, "--help"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, f"{script}: {done.stderr[-300:]}"
