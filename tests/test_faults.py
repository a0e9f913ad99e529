"""Faults a careless or hostile user meets, one class per section: numbers out of range, degenerate sample sets,
tensors of another kind, two runs in one folder, --resume with other flags, offline data, signals, a full disk,
checkpoint configs checked like flags, odd paths. Each ends in one line on stderr (exit 2; 130 for a signal), no
traceback, and leaves models/ and figures/ as they were. Tiny models and in-process runs: seconds in all."""
import contextlib
import dataclasses
import fcntl
import resource
import signal
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

import classifier.unconditional
import mnistgen.training
import realnvp.train
from classifier.model import (ClassifierConfig, MnistClassifier, Scorer, build as build_classifier, fid_notes,
                              frechet_distance, gaussian_stats, reference_statistics)
from conftest import REPO_ROOT, assert_one_line_error, run_script
from ebm.ebm import EBMConfig, backbone
from gan.gan import GANConfig, build as build_gan
from mnistgen import data
from mnistgen.checkpoint import load_checkpoint, save_checkpoint
from mnistgen.errors import UserError, run_cli
from mnistgen.files import atomic_torch_save, atomic_write_text
from mnistgen.training import fit
from realnvp.realnvp import RealNVPConfig, build as build_flow
from test_training import ToyTask, options
from vae.vae import VAEConfig, build as build_vae

TOO_BIG = str(10 ** 12)


@pytest.fixture(autouse=True)
def shipped_files_stay():
    """No case may touch a file of models/ or figures/."""
    def snapshot():
        return {p: (p.stat().st_size, p.stat().st_mtime_ns)
                for folder in ("models", "figures") for p in sorted((REPO_ROOT / folder).glob("*"))}
    before = snapshot()
    yield
    assert snapshot() == before


@contextlib.contextmanager
def deadline(seconds):
    """TimeoutError instead of a hang: without these checks some cases ran for minutes."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fails_in_one_line(args, contains, cwd=None, seconds=20):
    with deadline(seconds):
        proc = run_script([a.replace("{tmp}", str(cwd)) if cwd else a for a in args], cwd=cwd)
    assert_one_line_error(proc, contains)
    return proc


# ---------------------------------------------------------------------------------------------- tiny checkpoints

def tiny_model(kind):
    """(config, build, state_dict key) of a tiny model of `kind`, as its loader reads it."""
    return {"ebm": (EBMConfig(hidden_size=4), backbone, "model"),
            "gan": (GANConfig(2, 10, (1, 28, 28), 4), build_gan, "g"),
            "vae": (VAEConfig((1, 28, 28), 10, 2, hidden_size=4), build_vae, "model"),
            "realnvp": (RealNVPConfig(num_hidden=8, hidden=(2, 2), res_blocks=0, checker=(1, 1), channel=(1,)),
                        build_flow, "model"),
            "classifier": (ClassifierConfig(width=4, feature_dim=8), build_classifier, "model")}[kind]


def tiny_checkpoint(folder, kind, change=lambda ckpt, weights: None):
    """folder/KIND.pt: a tiny model's checkpoint, edited by change(ckpt, its state_dict)."""
    config, build, key = tiny_model(kind)
    torch.manual_seed(0)
    ckpt = {"kind": kind, "config": dataclasses.asdict(config), "format": 1, key: build(config).state_dict()}
    change(ckpt, ckpt[key])
    torch.save(ckpt, folder / f"{kind}.pt")
    return folder / f"{kind}.pt"


# each model's command that loads a checkpoint, run in a scratch folder (the checkpoint's path goes last)
LOADERS = {"ebm": ["ebm/main.py", "--play", "--num_images", "2", "--figure", "{tmp}/f.png", "--load_dir"],
           "gan": ["gan/gan.py", "--eval", "--load_path"],
           "vae": ["vae/vae.py", "--eval", "--load_path"],
           "realnvp": ["realnvp/train.py", "--eval", "--limit", "10", "--load_path"],
           "classifier": ["classifier/train.py", "--test", "--load_path"]}


def load_fails(tmp_path, kind, change, contains, seconds=20):
    path = tiny_checkpoint(tmp_path, kind, change)
    return fails_in_one_line(LOADERS[kind] + [str(path), "--device", "cpu"], contains, cwd=tmp_path, seconds=seconds)


def first_float(weights):
    return next(name for name, t in weights.items() if torch.is_floating_point(t))


# ---------------------------------------------------------------------------------------------- 1. ranges
# An unwritable output makes the code without range checks fail fast instead of training or sampling for hours.
@pytest.mark.parametrize("args, contains", [
    (["vae/vae.py", "--lr", "1e308", "--logdir", "{tmp}/f/run"], "argument --lr: expected a number in (0, 1], got 1e308"),
    (["gan/gan.py", "--lr", "1e308", "--logdir", "{tmp}/f/run"], "argument --lr: expected a number in (0, 1]"),
    (["ebm/main.py", "--lr", "1e308", "--logdir", "{tmp}/f/run"], "argument --lr: expected a number in (0, 1]"),
    (["realnvp/train.py", "--lr", "1e308", "--logdir", "{tmp}/f/run"], "argument --lr: expected a number in (0, 1]"),
    (["classifier/train.py", "--lr", "1e308", "--logdir", "{tmp}/f/run"], "argument --lr: expected a number in (0, 1]"),
    (["classifier/train.py", "--seed", "-1", "--logdir", "{tmp}/f/run"],
     "argument --seed: expected an integer in [0, 4294967295], got -1"),
    (["classifier/train.py", "--seed", str(2 ** 33), "--logdir", "{tmp}/f/run"], "argument --seed: expected an integer"),
    (["ebm/main.py", "--play", "--seed", "-1"], "argument --seed: expected an integer in [0, 4294967295]"),
    (["vae/vae.py", "--eval", "--seed", str(2 ** 70)], "argument --seed: expected an integer in [0, 4294967295]"),
    (["classifier/train.py", "--batch_size", "1000000000", "--logdir", "{tmp}/f/run"],
     "argument --batch_size: expected an integer in [1, 60000]"),
    (["realnvp/train.py", "--num_hidden", "1000000000", "--logdir", "{tmp}/f/run"],
     "argument --num_hidden: expected an integer in [1, 4096]"),
    (["realnvp/train.py", "--checker", "1000000,1", "--logdir", "{tmp}/f/run"], "argument --checker: expected"),
    (["ebm/sample.py", "--num_samples", TOO_BIG, "--figure", "{tmp}/f/s.png"],
     "argument --num_samples: expected an integer in [1, 60000]"),
    (["realnvp/sample.py", "--num_samples", TOO_BIG, "--figure", "{tmp}/f/s.png"], "argument --num_samples: expected"),
    (["ebm/sample.py", "--sample_steps", TOO_BIG, "--figure", "{tmp}/f/s.png"], "argument --sample_steps: expected"),
    (["gan/gan.py", "--eval_samples", TOO_BIG, "--logdir", "{tmp}/f/run"], "argument --eval_samples: expected"),
    (["vae/vae.py", "--recon_logstd_init", "nan", "--logdir", "{tmp}/f/run"], "argument --recon_logstd_init: expected"),
    (["gan/gan.py", "--eval", "--truncation", "1e308", "--grid_path", "{tmp}/f/g.png"],
     "argument --truncation: expected a number in (0, 10], got 1e308"),
], ids=lambda v: " ".join(v[:3]) if isinstance(v, list) else None)
def test_numbers_out_of_range_are_refused_before_any_work(tmp_path, args, contains):
    (tmp_path / "f").write_text("a file where a folder should be")
    fails_in_one_line(args, contains, cwd=tmp_path)


# ---------------------------------------------------------------------------------------------- 2. degenerate sets

@pytest.fixture
def tiny_scorer(monkeypatch, tmp_path):
    """classifier.unconditional scoring with a tiny classifier (no shipped checkpoint needed) against 40 noise
    images, its disk cache in a scratch folder."""
    monkeypatch.setenv("MNISTGEN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = MnistClassifier(width=4, feature_dim=8).eval()
    scorer = Scorer(model, reference_statistics(model, torch.rand(40, 1, 28, 28), torch.arange(40) % 10))
    monkeypatch.setattr(classifier.unconditional, "get_scorer", lambda *args, **kwargs: scorer)
    return scorer


@pytest.mark.parametrize("images, note", [
    (torch.rand(1, 1, 28, 28), "n/a (FID needs at least two images to estimate a covariance; the set has 1)"),
    (torch.full((5, 1, 28, 28), float("nan")), "n/a (the classifier's features of 5 of the 5 images are NaN"),
    (torch.cat([torch.rand(4, 1, 28, 28), torch.full((1, 1, 28, 28), float("inf"))]), "features of 1 of the 5"),
])
def test_unconditional_fid_of_a_degenerate_set_is_na_with_the_reason(tiny_scorer, capsys, images, note):
    """ebm/sample.py --num_samples 1, realnvp/sample.py --temperature 1e308 (NaN images): n/a, not LinAlgError."""
    classifier.unconditional.print_sample_scores({"samples": images}, "cpu")
    assert note in capsys.readouterr().out


def test_the_shared_fid_never_raises():
    good = gaussian_stats(torch.randn(50, 8))
    for bad in (gaussian_stats(torch.randn(1, 8)), gaussian_stats(torch.full((3, 8), float("nan"))),
                (np.zeros(8), np.full((8, 8), np.inf))):
        assert np.isnan(frechet_distance(bad, good)) and np.isnan(frechet_distance(good, bad))
    assert fid_notes(None, torch.full((3, 8), float("nan")))[0].startswith("the classifier's features of 3 of the 3")


# ---------------------------------------------------------------------------------------------- 3. tensor kinds

def make_sparse(t):
    return t.to_sparse()


def make_meta(t):
    return t.to("meta")


@pytest.mark.parametrize("kind", list(LOADERS))
@pytest.mark.parametrize("make, contains", [(make_sparse, "is a sparse_coo tensor"),
                                            (make_meta, "is a tensor on the meta device")], ids=["sparse", "meta"])
def test_sparse_or_meta_tensors_in_a_checkpoint_name_the_entry(tmp_path, kind, make, contains):
    def change(ckpt, weights):
        name = first_float(weights)
        weights[name] = make(weights[name])
    proc = load_fails(tmp_path, kind, change, contains)
    assert f"entry {tiny_model(kind)[2]}." in proc.stderr


@pytest.mark.parametrize("make, contains", [(make_sparse, "entry imgs is a sparse_coo tensor"),
                                            (make_meta, "entry imgs is a tensor on the meta device")],
                         ids=["sparse", "meta"])
def test_sparse_or_meta_tensors_in_a_samples_file_name_the_entry(tmp_path, make, contains):
    torch.save(dict(imgs=make(torch.rand(4, 1, 28, 28)), labels=torch.arange(4)), tmp_path / "s.pt")
    fails_in_one_line(["classifier/evaluate.py", str(tmp_path / "s.pt"), "--no_references"], contains, cwd=tmp_path)


# ---------------------------------------------------------------------------------------------- 4. one run per folder

@contextlib.contextmanager
def held_by_another_run(folder, pid="4242"):
    """folder/.lock locked through a file of our own, as another live run holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(f"{pid}\n")
        lock.flush()
        yield


@pytest.mark.parametrize("args", [
    ["classifier/train.py", "--limit", "128", "--num_epochs", "1", "--width", "4", "--logdir", "{tmp}/run"],
    ["realnvp/train.py", "--limit", "100", "--batch_size", "50", "--hidden", "2,2", "--checker", "1,1", "--channel", "1",
     "--num_hidden", "8", "--epochs", "1", "--logdir", "{tmp}/run"],
], ids=["classifier", "realnvp"])
def test_a_second_run_in_a_held_run_folder_names_the_other_process(tmp_path, args):
    with held_by_another_run(tmp_path / "run"):
        fails_in_one_line(args + ["--device", "cpu"], "is in use by another run (process 4242)", cwd=tmp_path)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text(f"{2 ** 22 + 7}\n")  # a pid no process has, no lock held
    assert fit(ToyTask(), options(tmp_path, steps=8)).exists()
    with held_by_another_run(tmp_path / "run"), pytest.raises(UserError, match="in use by another run"):
        fit(ToyTask(), options(tmp_path, steps=8))


# ---------------------------------------------------------------------------------------------- 5. --resume flags

TOY_FLAGS = dict(num_epochs=2, limit=5000, batch_size=64, arch="split", hidden=(4, 6), max_minutes=None, resume=False,
                 device="auto", logdir="runs/toy")


@pytest.mark.parametrize("changes, contains", [
    (dict(limit=None), "--limit 5000 then, not given now"),
    (dict(batch_size=128), "--batch_size 64 then, 128 now"),
    (dict(arch="multiscale", hidden=(12, 48, 96)), "--arch split then, multiscale now; --hidden 4,6 then, 12,48,96 now"),
    (dict(num_epochs=1), "--num_epochs 2 then, 1 now"),
], ids=["limit dropped", "batch_size", "architecture", "fewer epochs"])
def test_resume_refuses_other_flags_and_lists_them(tmp_path, changes, contains):
    fit(ToyTask(), options(tmp_path, steps=16, flags=TOY_FLAGS))
    resumed = dict(TOY_FLAGS, resume=True, **changes)
    with pytest.raises(UserError, match="only a longer --num_epochs, --max_minutes") as err:
        fit(ToyTask(), options(tmp_path, steps=24, resume=True, flags=resumed))
    assert contains in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("changes", [dict(num_epochs=3), dict(max_minutes=5.0), dict(device="cpu"),
                                     dict(logdir="/elsewhere/run")], ids=lambda c: next(iter(c)))
def test_resume_accepts_the_flags_meant_to_change(tmp_path, changes):
    fit(ToyTask(), options(tmp_path, steps=16, flags=TOY_FLAGS))
    fit(ToyTask(), options(tmp_path, steps=24, resume=True, flags=dict(TOY_FLAGS, resume=True, **changes)))


@pytest.mark.slow  # a smoke training
def test_resume_without_the_limit_of_a_smoke_run_is_refused_on_the_command_line(tmp_path):
    """The case that continued as a full run with its epoch counter reset."""
    run = ["classifier/train.py", "--num_epochs", "1", "--width", "4", "--device", "cpu", "--logdir", str(tmp_path)]
    done = run_script(run + ["--limit", "128"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    fails_in_one_line(run + ["--resume"], "--limit 128 then, not given now", cwd=tmp_path)


# ---------------------------------------------------------------------------------------------- 6. offline data

@pytest.fixture
def offline(monkeypatch):
    """No network: every connection hangs until its timeout (a name lookup or a black-holed route), and a proxy at
    a closed port for anything that gets past that."""
    def hang(address, timeout=None, *args, **kwargs):
        time.sleep(min(timeout or 60, 60))
        raise socket.timeout("timed out")
    monkeypatch.setattr(socket, "create_connection", hang)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "npm_config_proxy",
                 "npm_config_https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.delenv("MNIST_ROOT", raising=False)
    monkeypatch.setattr(data, "CONNECT_TIMEOUT", 0.2, raising=False)  # raising=False: also before it existed


def test_offline_download_ends_in_seconds_and_says_where_the_files_go(tmp_path, offline):
    start = time.time()
    with deadline(10), pytest.raises(data.DataError) as err:
        data.find_root(tmp_path / "mnist")
    assert time.time() - start < 3
    message = str(err.value)
    assert "\n" not in message and "no connection to" in message
    assert f"t10k-labels-idx1-ubyte (uncompressed) in {tmp_path / 'mnist' / 'MNIST' / 'raw'}" in message


@pytest.mark.parametrize("data_root, contains", [
    ("", "--data_root is empty"),
    ("{tmp}/a_file", "is a file; it must be the folder that holds MNIST/raw/"),
    ("{tmp}/odd", "t10k-images-idx3-ubyte is a folder (or another non-file) where the MNIST file"),
], ids=["empty", "a file", "a folder in a file's place"])
def test_bad_data_roots_fail_at_once(tmp_path, offline, data_root, contains):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "odd" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").mkdir(parents=True)
    proc = fails_in_one_line(["mnistgen/data.py", "--download", "--data_root", data_root], contains, cwd=tmp_path,
                             seconds=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "odd"]  # nothing fetched into the folder
    assert "fetching" not in proc.stdout


# ---------------------------------------------------------------------------------------------- 7. signals

def test_sigterm_is_treated_like_sigint():
    # a process of its own (the signal is the point), running errors.py alone: no torch to import
    code = ("import importlib.util, os, signal, sys, time\n"
            "spec = importlib.util.spec_from_file_location('errors', sys.argv[1])\n"
            "errors = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(errors)\n"
            "@errors.run_cli\ndef main():\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(10)\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code, str(REPO_ROOT / "mnistgen" / "errors.py")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 130 and proc.stderr.strip() == "interrupted", (proc.returncode, proc.stderr)


def test_an_interrupted_training_says_how_to_resume(tmp_path, capsys):
    @run_cli
    def train():
        fit(ToyTask(fail_at={13}, error=KeyboardInterrupt), options(tmp_path))
    with pytest.raises(SystemExit) as stop:
        train()
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 130 and len(err.splitlines()) == 1, err
    assert err.startswith("interrupted: toy training at step 12; --resume continues from step 8"), err


def test_a_max_minutes_stop_and_resume_log_like_an_uninterrupted_run(tmp_path, monkeypatch):
    torch.manual_seed(0)
    whole = ToyTask()
    fit(whole, options(tmp_path / "a"))
    class Clock:  # the scaffold's clock, one second further at each reading
        now = 0

        def time(self):
            self.now += 1
            return self.now
    monkeypatch.setattr(mnistgen.training, "time", Clock())
    torch.manual_seed(0)
    fit(ToyTask(), options(tmp_path / "b", max_minutes=20 / 60))  # stops inside an evaluation window
    monkeypatch.undo()
    stopped = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "toy")["step"]
    assert stopped % 8 and stopped < 48
    torch.manual_seed(123)
    resumed = ToyTask()
    fit(resumed, options(tmp_path / "b", resume=True))
    assert torch.equal(whole.net.weight, resumed.net.weight)
    rows = [(tmp_path / x / "run" / "log.csv").read_text().splitlines() for x in ("a", "b")]
    assert [r.split(",")[:4] for r in rows[0]] == [r.split(",")[:4] for r in rows[1]]


# ---------------------------------------------------------------------------------------------- 8. disk full

@contextlib.contextmanager
def file_size_limit(nbytes):
    """As `ulimit -f`: writes beyond nbytes fail with EFBIG (Python ignores the SIGXFSZ that comes with it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("write", [
    lambda path: atomic_torch_save({"a": torch.zeros(100_000)}, path),
    lambda path: atomic_write_text(path, "x" * 300_000),
], ids=["torch.save", "text"])
def test_a_full_disk_is_one_line_naming_the_file_and_the_old_file_stays(tmp_path, write):
    path = tmp_path / "out.pt"
    path.write_text("previous")
    with file_size_limit(100_000), pytest.raises(UserError) as err:
        write(path)
    assert str(err.value).startswith(f"could not write {path} (File too large)") and "\n" not in str(err.value)
    assert path.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_eval_on_a_full_disk_fails_in_one_line_and_reports_nothing_written(tmp_path, kind):
    path = tiny_checkpoint(tmp_path, kind)
    with file_size_limit(1_000_000):
        proc = fails_in_one_line(LOADERS[kind] + [str(path), "--device", "cpu"],
                                 f"could not write {kind}_generated_samples.pt (File too large)",
                                 cwd=tmp_path)
    assert "wrote" not in proc.stdout and not (tmp_path / f"{kind}_generated_samples.pt").exists()


def test_a_training_whose_last_pt_cannot_be_written_stops_in_one_line(tmp_path):
    @run_cli
    def train():
        fit(ToyTask(), options(tmp_path, steps=8))
    with file_size_limit(600), pytest.raises(SystemExit) as stop:
        train()
    assert stop.value.code == 2


# ---------------------------------------------------------------------------------------------- 9. configs

def set_config(**fields):
    return lambda ckpt, weights: ckpt["config"].update(fields)


def as_int64(ckpt, weights):
    name = first_float(weights)
    weights[name] = weights[name].long()


@pytest.mark.parametrize("kind, change, contains", [
    ("ebm", set_config(inpaint_shifts=[100]), "inpaint_shifts must be an integer in [-4, 4], got 100"),
    ("ebm", set_config(inpaint_steps=10 ** 12), "inpaint_steps must be an integer in [1, 10000]"),
    ("ebm", set_config(inpaint_chains=10 ** 9), "inpaint_chains must be an integer in [1, 8]"),
    ("ebm", set_config(lr=1e308), "lr must be a number in (0, 1]"),
    ("gan", set_config(truncation=0.0), "truncation must be a number in (0, 10], got 0.0"),
    ("vae", set_config(hidden_size=10 ** 9), "hidden_size must be an integer in [1, 2048]"),
    ("realnvp", set_config(checker=[10 ** 6, 1]), "checker must be an integer in [0, 16], got 1000000"),
    ("vae", lambda ckpt, weights: ckpt.update(format=99), "checkpoint format 99; this code reads format 1"),
    ("classifier", as_int64, "is torch.int64, the model needs floating-point values"),
    ("gan", as_int64, "is torch.int64, the model needs floating-point values"),
], ids=["ebm shifts", "ebm steps", "ebm chains", "ebm lr", "gan truncation 0", "vae hidden", "realnvp checker",
        "format 99", "classifier int64", "gan int64"])
def test_a_checkpoint_config_is_checked_like_the_flags_before_anything_is_built(tmp_path, monkeypatch, kind,
                                                                                 change, contains):
    def no_build(config):
        raise AssertionError("the model was built before its config was checked")
    if kind == "realnvp":
        monkeypatch.setattr(realnvp.train, "build", no_build)
    load_fails(tmp_path, kind, change, contains, seconds=10)


# ---------------------------------------------------------------------------------------------- 10. odd paths, warnings

@pytest.mark.parametrize("write", [
    lambda path: atomic_torch_save({"a": torch.ones(3)}, path),
    lambda path: atomic_write_text(path, "new"),
    lambda path: save_checkpoint(path, "toy", {"width": 4}, model={}),
], ids=["torch.save", "text", "checkpoint"])
def test_a_symlinked_output_writes_its_target_and_stays_a_link(tmp_path, write):
    """The choice made: a --save_path (any output) that is a symbolic link writes the file it points to."""
    (tmp_path / "shared").mkdir()
    target = tmp_path / "shared" / "model.pt"
    target.write_text("old")
    link = tmp_path / "model.pt"
    link.symlink_to(target)
    write(link)
    assert link.is_symlink() and target.read_bytes() != b"old"
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["model.pt"]


def test_a_training_ships_through_a_symlinked_save_path(tmp_path):
    target = tmp_path / "elsewhere.pt"
    target.write_text("old")
    (tmp_path / "toy.pt").symlink_to(target)
    fit(ToyTask(), options(tmp_path, steps=8, save_path=tmp_path / "toy.pt"))
    assert (tmp_path / "toy.pt").is_symlink() and load_checkpoint(target, "toy")["config"] == {"width": 4}


@pytest.mark.parametrize("kind, change, contains", [
    ("gan", set_config(hidden_size=0), "hidden_size must be an integer in [1, 2048], got 0"),  # zero-size layers warn
    ("vae", lambda ckpt, weights: weights.update(w=torch.zeros(2).to_sparse()), "sparse"),  # loading sparse warns
], ids=["zero-size layers", "sparse"])
def test_torch_warnings_add_no_lines_to_an_error(tmp_path, kind, change, contains):
    def to_stderr(message, category, filename, lineno, file=None, line=None):  # as on the command line
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
    with warnings.catch_warnings():  # pytest records warnings; here they go where a user would see them
        warnings.simplefilter("always")
        warnings.showwarning = to_stderr
        load_fails(tmp_path, kind, change, contains)

