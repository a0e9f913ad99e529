"""Data loading, checkpoint I/O, the scoring classifier and the CLI error paths."""
import json
import math
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest
import torch

import classifier
from classifier.model import (DEFAULT_PATH, MnistClassifier, Scorer, cached_reference_statistics, check_samples,
                              collapsed_reference, fid_notes, format_score, frechet_distance, gaussian_stats,
                              get_scorer, reference_scores, reference_statistics)
from conftest import assert_one_line_error
from conftest import run_script
from mnistgen import data
from mnistgen.checkpoint import CheckpointError, half_state, load_checkpoint, load_state, save_checkpoint
from mnistgen.utils import REPO_ROOT, UserError

needs_classifier = pytest.mark.skipif(not DEFAULT_PATH.is_file(), reason="models/classifier.pt not shipped yet")


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
    with pytest.raises(CheckpointError, match="holds a checkpoint of the vae model"):
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


def test_scores_of_too_few_images_say_which_fid_is_missing():
    model = MnistClassifier(width=4, feature_dim=8).eval()
    scorer = Scorer(model, reference_statistics(model, torch.rand(40, 1, 28, 28), torch.arange(40) % 10))
    one = scorer.score(torch.rand(1, 1, 28, 28), torch.tensor([3]))
    assert 0 <= one["accuracy"] <= 1 and math.isnan(one["fid"]) and math.isnan(one["class_fid"])
    assert "FID n/a  per-class FID n/a" in format_score(one)
    assert [n.split(";")[0] for n in fid_notes(torch.tensor([3]))] == [
        "FID needs at least two images to estimate a covariance",
        "per-class FID needs at least two images of every class present"]
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 2 has a single image
    some = scorer.score(torch.rand(5, 1, 28, 28), labels)
    assert not math.isnan(some["fid"]) and math.isnan(some["class_fid"]) and set(some["per_class_fid"]) == {0, 1}
    assert fid_notes(labels) == ["per-class FID needs at least two images of every class present; class 2 has only one"]
    assert fid_notes(torch.tensor([0, 1, 1]))[-1].endswith("class 0 has only one")
    assert fid_notes(torch.tensor([0, 1]))[-1].endswith("classes 0, 1 have only one")
    assert fid_notes(torch.arange(20) % 10) == []


# ---------------------------------------------------------------- the statistics cache
@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty cache folder, and a 500-image MNIST for the classifier's statistics (the code path is the one
    of the 10,000 test images, in a fraction of the time)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MNISTGEN_CACHE", str(folder))
    small = lambda train=True, data_root=None: tuple(t[:500] for t in data.load_mnist(train, data_root))
    monkeypatch.setattr(classifier.model, "load_mnist", small)
    return folder


def tiny_classifier(seed=0):
    torch.manual_seed(seed)
    return MnistClassifier(width=4, feature_dim=8).eval()


def assert_same_reference(a, b):
    assert a["accuracy"] == b["accuracy"]
    for stats_a, stats_b in zip([a["all"], *a["per_class"]], [b["all"], *b["per_class"]]):
        assert all(torch.equal(x, y) for x, y in zip(stats_a, stats_b))


def test_cached_statistics_equal_the_recomputation(cache_dir):
    model = tiny_classifier()
    direct = reference_statistics(model, *classifier.model.load_mnist(train=False))
    first = cached_reference_statistics(model)          # computed and stored
    assert len(list(cache_dir.glob("classifier-test-reference-*.pt"))) == 1
    second = cached_reference_statistics(model)         # read back
    assert_same_reference(direct, first)
    assert_same_reference(direct, second)
    # the references' scores, computed against the stored statistics, are the same numbers again
    fresh = reference_scores(Scorer(model, direct))
    stored = reference_scores(Scorer(model, second))
    assert fresh == stored and fresh == reference_scores(Scorer(model, cached_reference_statistics(model)))
    # a samples set scored twice: the second score is the stored one, equal to the computation
    imgs, labels = classifier.model.load_mnist(train=False)
    scorer = Scorer(model, second)
    assert scorer.score(imgs, labels) == scorer.compute_score(imgs, labels)
    assert len(list(cache_dir.glob("classifier-scores-*.pt"))) == 1 + 2  # and the two references' scores
    assert scorer.score(imgs, labels) == scorer.compute_score(imgs, labels)


def test_another_classifier_misses_the_cache(cache_dir):
    cached_reference_statistics(tiny_classifier(0))
    other = tiny_classifier(1)
    assert_same_reference(cached_reference_statistics(other), reference_statistics(other, *classifier.model.load_mnist(False)))
    assert len(list(cache_dir.glob("classifier-test-reference-*.pt"))) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "other key", "folder"])
def test_a_damaged_cache_entry_is_recomputed_not_an_error(cache_dir, damage):
    model = tiny_classifier()
    expected = cached_reference_statistics(model)
    (entry,) = cache_dir.glob("classifier-test-reference-*.pt")
    if damage == "garbage":
        entry.write_bytes(b"not a torch file" * 10)
    elif damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:1000])
    elif damage == "empty":
        entry.write_bytes(b"")
    elif damage == "other key":  # a readable entry whose recorded key is not this one's
        torch.save({"key": "{}", "value": {"accuracy": 0.5}}, entry)
    else:
        entry.unlink()
        entry.mkdir()
    assert_same_reference(cached_reference_statistics(model), expected)
    if damage != "folder":  # rewritten, readable again
        assert torch.load(entry, weights_only=True)["value"]["accuracy"] == expected["accuracy"]


def test_an_unwritable_cache_folder_is_skipped(cache_dir, monkeypatch):
    cache_dir.parent.joinpath("file").write_text("a file where the cache folder would be")
    monkeypatch.setenv("MNISTGEN_CACHE", str(cache_dir.parent / "file" / "cache"))
    model = tiny_classifier()
    assert_same_reference(cached_reference_statistics(model), reference_statistics(model, *classifier.model.load_mnist(False)))


def test_one_cycle_is_torchs_schedule():
    from classifier.train import one_cycle
    for total in (1, 7, 100):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=3e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=total)
        for step in range(total):
            scale, beta1 = one_cycle(step, total)
            group = opt.param_groups[0]
            assert scale * 3e-3 == pytest.approx(group["lr"], rel=1e-9) and beta1 == pytest.approx(group["betas"][0])
            opt.step()
            sched.step()


@pytest.mark.slow
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


@pytest.mark.slow  # smoke trainings
def test_classifier_train_smoke_resume_and_shipping_rule(tmp_path):
    """A short run ships into its run folder only (models/classifier.pt untouched), --resume continues it,
    --save_path ships where asked; the shipped config is the ClassifierConfig."""
    from classifier.train import main
    shipped = (DEFAULT_PATH.stat().st_mtime_ns, DEFAULT_PATH.read_bytes()) if DEFAULT_PATH.is_file() else None
    run = ["--limit", "256", "--width", "4", "--device", "cpu", "--logdir", str(tmp_path / "run")]
    main(run + ["--num_epochs", "1"])
    assert (tmp_path / "run" / "shipped.pt").is_file()
    main(run + ["--num_epochs", "2", "--resume", "--save_path", str(tmp_path / "c.pt")])
    ckpt = load_checkpoint(tmp_path / "c.pt", "classifier")
    assert ckpt["config"] == {"width": 4, "feature_dim": 128} and ckpt["model"]["head.1.weight"].dtype == torch.float16
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,test_accuracy") and [r.split(",")[1] for r in rows[1:]] == ["1", "2"]
    from classifier.train import one_cycle
    group = load_checkpoint(tmp_path / "run" / "last.pt", "classifier")["optimizers"]["adamw"]["param_groups"][0]
    assert group["betas"][0] == one_cycle(3, 4)[1]  # the momentum of the last of 2 x 2 steps
    assert not classifier.load(tmp_path / "c.pt").training
    if shipped is not None:
        assert (DEFAULT_PATH.stat().st_mtime_ns, DEFAULT_PATH.read_bytes()) == shipped


# ---------------------------------------------------------------- command-line errors
def test_evaluate_cli_errors_are_one_line(tmp_path):
    missing = run_script(["classifier/evaluate.py", str(tmp_path / "nothing.pt")])
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "no samples file" in missing.stderr
    torch.save(dict(imgs=torch.rand(3, 1, 28, 28) + 1, labels=torch.arange(3)), tmp_path / "bad.pt")
    bad = run_script(["classifier/evaluate.py", str(tmp_path / "bad.pt")])
    assert bad.returncode == 2 and "[0, 1]" in bad.stderr and "Traceback" not in bad.stderr


def test_evaluate_a_single_image_prints_accuracy_and_why_no_fid(tmp_path):
    model = MnistClassifier(width=4, feature_dim=8)
    save_checkpoint(tmp_path / "c.pt", "classifier", model.config, model=model.state_dict())
    images, labels = data.load_mnist(train=False)
    torch.save(dict(imgs=images[:1], labels=labels[:1]), tmp_path / "one.pt")
    proc = run_script(["classifier/evaluate.py", str(tmp_path / "one.pt"), "--no_references",
                                  "--classifier", str(tmp_path / "c.pt")])
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "one.pt (1 images)\n  accuracy " in proc.stdout and "FID n/a  per-class FID n/a" in proc.stdout
    assert "note: FID needs at least two images" in proc.stdout


# (a bad classifier/train.py --test --load_path: the table of bad checkpoints in test_reliability.py)
def test_classifier_training_outputs_are_checked_first(tmp_path):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    base = ["classifier/train.py", "--limit", "256", "--width", "4", "--num_epochs", "1"]
    for flag, value in [("--save_path", "file.txt/c.pt"), ("--logdir", "file.txt/run")]:
        proc = run_script(base + ["--logdir", str(tmp_path / "run"), flag, str(tmp_path / value)])
        assert_one_line_error(proc, "cannot write")
        assert not (tmp_path / "run" / "log.csv").exists()  # failed before the first step
    (tmp_path / "weights").mkdir()
    save_checkpoint(tmp_path / "weights" / "last.pt", "classifier", {"width": 4, "feature_dim": 128}, model={})
    before = (tmp_path / "weights" / "last.pt").read_bytes()
    proc = run_script(base + ["--logdir", str(tmp_path / "weights"), "--resume"])
    assert_one_line_error(proc, "weights-only")
    assert (tmp_path / "weights" / "last.pt").read_bytes() == before


# ---------------------------------------------------------------- scripts without installing the project
def entry_scripts():
    """Every script: a file one folder deep with a `__main__` guard (mnistgen's are run with -m)."""
    return sorted(p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("*/*.py")
                  if p.parent.name not in ("tests", "mnistgen", "build") and '__name__ == "__main__"' in p.read_text())


@pytest.mark.slow  # an interpreter importing torch per script
@pytest.mark.parametrize("script, has, lacks", [
    ("vae/vae.py", ["--eval", "--load_path", "--num_epochs"], []),
    ("vae/train.py", ["--num_epochs", "--temperature", "--seed"], ["--eval", "--load_path"]),
    ("vae/evaluate.py", ["--load_path", "--grid_path", "--seed"], ["--eval", "--num_epochs"]),
    ("vae/readme_figures.py", ["--figures_dir", "--temperatures"], ["--eval"]),
    ("gan/gan.py", ["--eval", "--load_path", "--num_epochs"], []),
    ("gan/train.py", ["--num_epochs", "--lr_decay_epochs", "--truncation"], ["--eval", "--load_path"]),
    ("gan/evaluate.py", ["--load_path", "--grid_path", "--truncation"], ["--eval", "--num_epochs"]),
])
def test_every_script_prints_its_flags(script, has, lacks):
    proc = run_script([script, "--help"])
    assert proc.returncode == 0 and "usage:" in proc.stdout
    flags = set(re.findall(r"^  (--\w+)", proc.stdout, re.M))  # the options the help lists
    assert set(has) <= flags and not set(lacks) & flags


@pytest.mark.parametrize("model", ["vae", "gan"])
@pytest.mark.slow  # a fresh interpreter per model
def test_the_starter_command_runs_from_inside_its_folder(tmp_path, model):
    """`cd vae && python vae.py --eval ...` without the editable install (-S): the script finds the repository's
    packages itself, and the folder's vae.py does not shadow the package vae (the same for the GAN)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": sysconfig.get_paths()["purelib"], "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-S", f"{model}.py", "--eval", "--load_path", str(tmp_path / "none.pt")],
                          cwd=REPO_ROOT / model, env=env, capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, "no checkpoint at")


# Runs each script as `python -S SCRIPT --help` would, in one interpreter (torch is imported once, not once per
# script): sys.path starts with the script's folder, and the repository's modules a previous script imported are
# forgotten, so each script must find the repository's packages itself.
HELP_RUNNER = """
import contextlib, io, json, runpy, sys
from pathlib import Path
repo, scripts = Path(sys.argv[1]), sys.argv[2:]
base = [p for p in sys.path if p not in ("", ".")]
results = {}
for script in scripts:
    path = repo / script
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(repo)):
            del sys.modules[name]
    sys.path[:] = [str(path.parent)] + base
    sys.argv = [str(path), "--help"]
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 0
        except BaseException as exc:
            code, err = 1, io.StringIO(f"{type(exc).__name__}: {exc}")
    results[script] = [code, "usage:" in out.getvalue(), err.getvalue()[-300:]]
print(json.dumps(results))
"""


@pytest.mark.slow  # an interpreter running every script
def test_entry_scripts_run_without_the_editable_install(tmp_path):
    """`python ebm/main.py ...` from a plain clone: `-S` skips site-packages' .pth files (the editable
    install), PYTHONPATH still provides torch and friends; every script must import and print --help."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": sysconfig.get_paths()["purelib"], "OMP_NUM_THREADS": "1"}
    scripts = entry_scripts()
    done = subprocess.run([sys.executable, "-S", "-c", HELP_RUNNER, str(REPO_ROOT), *scripts], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]
    results = json.loads(done.stdout.splitlines()[-1])
    assert set(results) == set(scripts) and len(scripts) > 15
    failed = {script: r for script, r in results.items() if r[:2] != [0, True]}
    assert not failed, failed
