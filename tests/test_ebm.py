"""Energy-based model: CD loss and sign, replay buffer, divergence and collapse guards, inpainting invariants,
the model contract (EBMConfig, build, load), the scripts and their tools (benchmarks/ebm_*.py), bad inputs."""
import dataclasses
import io
import math
import os
import subprocess
import sys

import pytest
import torch

import benchmarks.ebm_export as ebm_export
import benchmarks.ebm_tune as ebm_tune
import ebm.main as ebm_main
import ebm.sample as ebm_sample
from conftest import assert_one_line_error, run_script
from ebm import INPAINT_KEYS, EBMConfig, MlpBackbone, Trainer, TrainingDiverged, build, load
from ebm.ebm import chain_start, vertical_interpolation
from ebm.protocol import StartMixture, corrupt, evaluate_inpainting, row_interpolation
from mnistgen.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mnistgen.data import load_mnist
from mnistgen.training import RunOptions, fit
from mnistgen.utils import MODELS_DIR, REPO_ROOT, shown

SHIPPED = MODELS_DIR / "ebm.pt"


def make_trainer(seed=0, **kw):
    torch.manual_seed(seed)
    settings = dict(buffer_size=50, langevin_k=3, langevin_noise_std=0.005, langevin_lr=10.0, replay_p=0.95,
                    lr=1e-3, l2_coef=1.0, proj_norm=0.01, inpaint_neg_p=0.0)
    settings.update(kw)
    return Trainer(MlpBackbone((1, 28, 28), 512), "cpu", **settings)


@pytest.fixture(scope="module")
def digits():
    return load_mnist(train=False)[0][:64]


# ---------------------------------------------------------------- loss and training step
def test_loss_is_cd_plus_l2_term():
    trainer = make_trainer(l2_coef=0.7)
    x_pos, x_neg = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)
    loss, e_pos, e_neg = trainer.loss_terms(x_pos, x_neg)
    with torch.no_grad():
        ep, en = -trainer.model(x_pos).squeeze(1), -trainer.model(x_neg).squeeze(1)
    expected = ep.mean() - en.mean() + 0.7 * (ep ** 2 + en ** 2).mean()
    assert torch.allclose(e_pos, ep) and torch.allclose(e_neg, en)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)


def test_train_step_lowers_data_energy_relative_to_negatives(digits):
    trainer = make_trainer(lr=1e-4, buffer_size=1000)
    x_pos = digits[:32]
    x_neg = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))

    def gap():  # E(x-) - E(x+) on fixed batches
        with torch.no_grad():
            return (trainer.model(x_pos).mean() - trainer.model(x_neg).mean()).item()

    before = gap()
    for _ in range(3):
        trainer.init_negative = lambda n: x_neg.clone()  # fixed negatives (through Langevin)
        stats = trainer.train_step(x_pos)
    assert gap() > before
    assert set(stats) == {"loss", "e_pos", "e_neg", "grad_norm"}
    assert len(trainer.replay_buffer) == 32 * 3 and trainer.replay_buffer[0].shape == (1, 28, 28)


def test_task_negatives_change_only_the_corrupted_rows(digits):
    trainer = make_trainer(buffer_size=100, inpaint_neg_p=0.5)  # a constructor argument, not set afterwards
    trainer.train_step(digits[:16])
    task = trainer.x_neg[8:]  # the last half started from corrupted copies of the first 8 positives
    assert trainer.x_neg.shape == (16, 1, 28, 28) and trainer.x_neg_init.shape == (8, 1, 28, 28)
    assert torch.equal(task[..., 1::2, :], digits[:8, :, 1::2, :])
    assert not torch.equal(task[..., 0::2, :], digits[:8, :, 0::2, :])
    # only the unconditional chains enter the replay buffer
    assert len(trainer.replay_buffer) == 8
    assert all(torch.equal(b, x) for b, x in zip(trainer.replay_buffer, trainer.x_neg[:8].unbind(0)))


def test_langevin_descends_energy_and_stays_in_range():
    trainer = make_trainer(langevin_k=20, langevin_noise_std=0.0)
    x = torch.rand(16, 1, 28, 28)
    out = trainer.langevin_dynamic(x)
    with torch.no_grad():
        assert trainer.model(out).mean() > trainer.model(x).mean()  # f up = energy down
    assert out.min() >= 0 and out.max() <= 1 and not out.requires_grad
    assert all(p.requires_grad and p.grad is None for p in trainer.model.parameters())


# ---------------------------------------------------------------- replay buffer
def test_replay_buffer_is_bounded():
    trainer = make_trainer(buffer_size=50)
    trainer.replay_buffer.extend(torch.rand(120, 1, 28, 28).unbind(0))
    assert len(trainer.replay_buffer) == 50


def test_init_negative_mixes_noise_and_buffer_at_replay_p():
    trainer = make_trainer(replay_p=0.7, buffer_size=10)
    x = trainer.init_negative(100)
    assert x.shape == (100, 1, 28, 28) and 0 <= x.min() and x.max() <= 1  # empty buffer: all noise
    trainer.replay_buffer.extend([torch.full((1, 28, 28), 2.0)] * 10)  # marker values outside [0, 1]
    torch.manual_seed(0)
    x = trainer.init_negative(4000)
    from_buffer = (x == 2.0).flatten(1).all(1)
    from_noise = ((x >= 0) & (x <= 1)).flatten(1).all(1)
    assert bool((from_buffer | from_noise).all())
    assert from_buffer.float().mean().item() == pytest.approx(0.7, abs=0.03)


# ---------------------------------------------------------------- model contract
def test_cli_defaults_are_the_config_defaults():
    args = ebm_main.build_parser().parse_args([])
    shared = [f.name for f in dataclasses.fields(EBMConfig) if hasattr(args, f.name)]
    assert len(shared) == 9
    assert ebm_main.config_from_args(args) == EBMConfig()
    # anchored to the repository, not to the folder the command runs in
    assert args.load_dir == str(SHIPPED) and args.figure == str(REPO_ROOT / "ebm_inpainting.png")
    assert ebm_sample.build_parser().parse_args([]).figure == str(REPO_ROOT / "runs" / "ebm_samples.png")


def test_build_save_load_round_trip(tmp_path):
    config = EBMConfig(langevin_k=3, inpaint_steps=7, inpaint_grad_clip=math.inf, proj_norm=None)
    trainer = build(config)
    assert trainer.config() == config and trainer.inpaint_neg_p == config.inpaint_neg_p
    trainer.save(tmp_path / "ebm.pt")
    loaded = load(tmp_path / "ebm.pt")
    assert loaded.config() == config and not loaded.model.training
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(),
                                                 loaded.model.state_dict().values()))
    other = build(EBMConfig())  # Trainer.load takes the weights and the inpainting settings of the file
    other.load(tmp_path, evaluate=False)  # a folder holding ebm.pt
    assert other.inpaint_config["steps"] == 7 and other.model.training
    assert torch.equal(other.model.fc1.weight, trainer.model.fc1.weight)


def test_a_config_key_left_out_takes_the_one_default(tmp_path):
    """EBMConfig has no required entries: every field has the default that trains the shipped model, the
    same the CLI shows; a stored config without one loads with that default (weights must still fit)."""
    state = build(EBMConfig()).model.state_dict()
    save_checkpoint(tmp_path / "a.pt", "ebm", {"langevin_k": 5}, model=state)
    assert load(tmp_path / "a.pt").config() == EBMConfig(langevin_k=5)
    save_checkpoint(tmp_path / "b.pt", "ebm", {}, model=build(EBMConfig(hidden_size=64)).model.state_dict())
    with pytest.raises(CheckpointError, match="fc1.weight"):
        load(tmp_path / "b.pt")


def test_non_finite_weights_are_refused(tmp_path, digits):
    trainer = make_trainer()
    with torch.no_grad():
        trainer.model.fc4.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="diverged"):
        trainer.train_step(digits[:8])
    with pytest.raises(TrainingDiverged, match="refusing"):
        trainer.save(tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


# ---------------------------------------------------------------- guards through the scaffold
def run_options(tmp_path, steps, **kw):
    return RunOptions(logdir=tmp_path / "run", total_steps=steps, eval_every=4, progress=False,
                      default_save_path=tmp_path / "models" / "ebm.pt", **kw)


def test_divergence_rolls_back_then_gives_up(tmp_path, monkeypatch, capsys):
    def always_nan(self, batch_x):
        with torch.no_grad():
            self.model.fc4.bias.fill_(float("nan"))
        raise TrainingDiverged("energies diverged (forced)")

    monkeypatch.setattr(Trainer, "train_step", always_nan)
    with pytest.raises(SystemExit) as exit_info:
        ebm_main.main(["--limit", "64", "--batch_size", "16", "--logdir", str(tmp_path / "run"),
                       "--save_path", str(tmp_path / "ship.pt"), "--device", "cpu"])
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    assert out.out.count("rolled back") == 3 and "gave up after 3 rollbacks" in out.err
    assert out.err.strip().splitlines()[-1].startswith("error: energies diverged (forced) at step 0; gave up")
    good = load_checkpoint(tmp_path / "run" / "last.pt", "ebm")  # the saved state is still clean
    assert all(torch.isfinite(t).all() for t in good["modules"]["model"].values())
    assert not (tmp_path / "ship.pt").exists()


def test_sampler_collapse_rolls_back_then_stops_early(tmp_path, monkeypatch, capsys):
    """Healthy steps (E(x-) = E(x+)) up to step 8, then a gap of 1: once the window (3 steps) is full the guard
    rolls back to the step-8 checkpoint at half the learning rate; after 3 rollbacks training stops early (no
    error: the weights are fine) and ships the best weights from before the collapse."""
    calls, lrs = [], []

    def fake_step(self, batch_x):
        calls.append(1)
        lrs.append(self.optimizer.param_groups[0]["lr"])
        self.x_neg = batch_x
        return dict(loss=0.0, e_pos=0.0, e_neg=0.0 if len(calls) <= 8 else 1.0, grad_norm=0.0)

    monkeypatch.setattr(Trainer, "train_step", fake_step)
    images = torch.rand(64, 1, 28, 28)
    task = ebm_main.EBMTask(build(EBMConfig(inpaint_steps=2)), images, images[:8], batch_size=16, gap_window=3)
    path = fit(task, run_options(tmp_path, 40, save_path=tmp_path / "ship.pt"))
    out = capsys.readouterr().out
    assert "step 8: sampler collapsed" in out and out.count("rolled back") == 3
    # each retry from the step-8 state runs at half the rate of the one before (same RNG state: a retry at the
    # same rate would repeat the same steps)
    assert sorted(set(lrs), reverse=True) == [1e-4, 5e-5, 2.5e-5, 1.25e-5]
    assert "training stops early" in out and path == tmp_path / "ship.pt" and path.is_file()
    steps = [r.split(",")[0] for r in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    assert steps == ["4", "8"]  # nothing after the rollbacks was kept
    assert load_checkpoint(tmp_path / "run" / "last.pt", "ebm")["step"] == 8


def test_a_rising_gap_is_not_checkpointed():
    images = torch.rand(32, 1, 28, 28)
    task = ebm_main.EBMTask(build(EBMConfig()), images, images[:4], batch_size=16, gap_window=3)
    task.gaps.extend([0.0, 0.0])
    assert task.healthy()  # a window not yet full says nothing
    task.gaps.append(0.06)
    assert task.mean_gap() == pytest.approx(0.02) and not task.healthy()  # above half of COLLAPSE_GAP


# ---------------------------------------------------------------- inpainting and protocol
def test_inpainting_keeps_unmasked_pixels_and_range(digits):
    trainer = make_trainer()
    corrupted, mask = corrupt(digits[:16], seed=0)
    recovered = trainer.inpainting(corrupted, mask, steps=5, chains=2, noise_std=0.05)
    assert recovered.shape == corrupted.shape
    assert torch.equal(recovered[~mask], corrupted[~mask])  # bit for bit
    assert recovered.min() >= 0 and recovered.max() <= 1
    assert not torch.equal(recovered[mask], corrupted[mask])


def test_shifted_chains_keep_unmasked_pixels_and_undo_their_shift(digits):
    trainer = make_trainer()
    corrupted, mask = corrupt(digits[:8], seed=0)
    recovered = trainer.inpainting(corrupted, mask, steps=3, shifts=(0, 1, -1, 2, -2))
    assert torch.equal(recovered[~mask], corrupted[~mask]) and 0 <= recovered.min() and recovered.max() <= 1
    # zero steps: each shifted chain returns its own start, so shifting then un-shifting must give the start back
    flat = trainer.inpainting(corrupted, mask, steps=0, shifts=(0,), start_mix=0.5, start_mix_clipped=0.5)
    shifted = trainer.inpainting(corrupted, mask, steps=0, shifts=(0, 3, -3), start_mix=0.5, start_mix_clipped=0.5)
    interior = (slice(None), slice(None), slice(None), slice(3, -3))  # away from the columns the roll wraps
    assert torch.allclose(flat[interior], shifted[interior], atol=1e-6)


def test_chain_start_mixes_observation_and_interpolation():
    observed = torch.tensor([0.2, 0.6, 0.0, 0.4, 1.0, 0.8]).view(1, 1, 6, 1)
    mask = torch.tensor([True, False, True, False, True, False]).view(1, 1, 6, 1)
    interp = vertical_interpolation(observed, mask).flatten().tolist()
    assert interp == pytest.approx([0.6, 0.6, 0.5, 0.4, 0.6, 0.8])  # row 0 copies row 1; rows 2, 4 average
    start = chain_start(observed, mask, mix=0.5, mix_clipped=0.75).flatten().tolist()
    # inside (0, 1): halfway; exactly 0 or 1 (clipped readings): 3/4 of the way to the observation
    assert start == pytest.approx([0.4, 0.6, 0.125, 0.4, 0.9, 0.8])
    assert torch.equal(chain_start(observed, mask, 1.0, 1.0), observed)  # mix 1: the corrupted image itself


def test_corruption_protocol_and_row_interpolation(digits):
    x = digits[:4]
    corrupted, mask = corrupt(x, seed=3)
    assert torch.equal(mask[0, 0, :, 0], torch.arange(28) % 2 == 0)
    assert torch.equal(corrupted[~mask], x[~mask]) and corrupted.min() >= 0 and corrupted.max() <= 1
    assert torch.equal(corrupted, corrupt(x, seed=3)[0])  # fixed seed
    interp = row_interpolation(corrupted, mask)
    assert torch.equal(interp[..., 0, :], x[..., 1, :])
    assert torch.allclose(interp[..., 4, :], (x[..., 3, :] + x[..., 5, :]) / 2)
    assert torch.equal(interp[~mask], x[~mask])


# ---------------------------------------------------------------- scripts
SMOKE = ["--limit", "300", "--batch_size", "16", "--langevin_k", "2", "--device", "cpu"]


def final_weights(run_dir):
    return load_checkpoint(run_dir / "last.pt", "ebm")["modules"]["model"]


@pytest.mark.slow  # two smoke trainings
def test_smoke_train_then_resume_continues_exactly(tmp_path):
    whole = tmp_path / "whole"
    ebm_main.main(SMOKE + ["--num_epochs", "2", "--logdir", str(whole)])
    run = tmp_path / "run"
    common = SMOKE + ["--logdir", str(run), "--save_path", str(tmp_path / "ebm.pt"),
                      "--figures_dir", str(tmp_path / "fig")]
    ebm_main.main(common + ["--num_epochs", "1"])
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {"ebm_curves.png", "ebm_val.png", "ebm_negatives.png"}
    assert (run / "negatives_000018.png").is_file()
    ebm_main.main(common + ["--num_epochs", "2", "--resume"])
    assert [r.split(",")[0] for r in (run / "log.csv").read_text().splitlines()] == ["step", "18", "36"]
    assert all(torch.equal(a, b) for a, b in zip(final_weights(whole).values(), final_weights(run).values()))
    last = load_checkpoint(run / "last.pt", "ebm")
    assert last["extra"]["replay_buffer"].shape == (36 * 4, 1, 28, 28)  # 4 unconditional chains per step
    shipped = load_checkpoint(tmp_path / "ebm.pt", "ebm")
    assert set(shipped) == {"kind", "config", "format", "step", "model"}  # no optimizer, no buffer
    assert shipped["model"]["fc1.weight"].dtype == torch.float32


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ebm") / "small.pt"
    build(EBMConfig(inpaint_steps=2)).save(path)
    return path


def test_play_prints_the_protocol_and_writes_its_figure_at_its_default(tmp_path, monkeypatch, capsys,
                                                                       small_checkpoint):
    figure = tmp_path / "ebm_inpainting.png"  # stands for the repository's ebm_inpainting.png
    monkeypatch.setattr(ebm_main, "PLAY_FIGURE", figure)
    monkeypatch.chdir(REPO_ROOT / "ebm")  # the default does not depend on the working folder
    res = ebm_main.main(["--play", "--load_dir", str(small_checkpoint), "--num_images", "20", "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("inpainting 20 test images: steps=2, step_size=15.0, noise_std=0.0, chains=1, grad_clip=0.01, "
                        "fidelity=0.0, start_mix=0.5, start_mix_clipped=0.7, shifts=(0, 1, -1, 2, -2)")
    assert [line.split("  ")[-1] for line in lines[1:4]] == ["(recovered by the EBM)", "(corrupted input)",
                                                             "(row interpolation baseline)"]
    assert lines[-1] == f"figure: {shown(figure)}" and figure.is_file()
    assert len(res["mse"]) == 20


@pytest.mark.slow  # a fresh interpreter
def test_play_from_inside_the_ebm_folder_finds_the_shipped_model(tmp_path):
    """`cd ebm && python main.py --play`: every default path is anchored to the repository."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "main.py", "--play", "--num_images", "2", "--figure",
                           str(tmp_path / "f.png"), "--device", "cpu"], cwd=REPO_ROOT / "ebm", env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]
    assert done.stdout.splitlines()[-1] == f"figure: {(tmp_path / 'f.png').resolve()}"


def test_export_then_tune(tmp_path, capsys, small_checkpoint):
    exported = tmp_path / "exp.pt"
    ebm_export.main(["--load_dir", str(small_checkpoint), "--out", str(exported), "--inpaint_chains", "3",
                     "--inpaint_grad_clip", "none", "--inpaint_shifts", "0,1", "--device", "cpu"])
    assert load(exported).inpaint_config == dict(steps=2, step_size=15.0, noise_std=0.0, chains=3,
                                                 grad_clip=math.inf, fidelity=0.0, start_mix=0.5,
                                                 start_mix_clipped=0.7, shifts=(0, 1))
    best = ebm_tune.main(["--load_dir", str(exported), "--num_images", "8", "--keys", "chains", "--device", "cpu"])
    assert set(best) == set(INPAINT_KEYS) and "best on 8 held-out" in capsys.readouterr().out


@pytest.mark.slow  # scores with the shipped classifier (its test-set statistics take a while)
def test_sample_script(tmp_path, capsys, small_checkpoint):
    imgs = ebm_sample.main(["--num_samples", "12", "--sample_steps", "3", "--load_dir", str(small_checkpoint),
                            "--figure", str(tmp_path / "samples.png"), "--device", "cpu"])
    assert imgs.shape == (12, 1, 28, 28) and (tmp_path / "samples.png").is_file()
    out = capsys.readouterr().out
    for name in ("EBM samples", "the chains' start alone", "real training digits", "uniform noise"):
        assert f"{name}: classifier confidence" in out and "FID to the test set" in out


@pytest.mark.parametrize("module", [ebm_main, ebm_tune, ebm_export, ebm_sample])
def test_scripts_have_their_own_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    help_text = capsys.readouterr().out
    assert exit_info.value.code == 0 and help_text.startswith("usage:")
    flags = [line.split()[0] for line in help_text.splitlines() if line.startswith("  --")]
    assert flags and all(f"--{a.dest}" in help_text for a in module.build_parser()._actions if a.dest != "help")


# ---------------------------------------------------------------- bad inputs
# (a bad --load_dir: the table of bad checkpoints in test_reliability.py)
@pytest.mark.parametrize("args, message", [
    (["--play", "--num_images", "99999999"], "--num_images 99999999 exceeds the 10000 test images"),
    (["--play", "--figure", "{tmp}/file.txt/out.png"], "cannot write"),
    (["--limit", "300", "--save_path", "{tmp}/file.txt/out.pt"], "cannot write"),
    (["--limit", "300", "--logdir", "{tmp}/file.txt/run"], "cannot write"),
    (["--limit", "300", "--logdir", "{tmp}/run", "--resume", "--save_path", "{tmp}/prev.pt"],
     "shipped (weights-only) checkpoint"),
])
def test_bad_main_arguments_are_one_line(tmp_path, args, message):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(SHIPPED.read_bytes())  # --resume from a weights-only file
    (tmp_path / "prev.pt").write_bytes(b"previous")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_one_line_error(run_script(["ebm/main.py", *args, "--device", "cpu"]), message)
    assert (tmp_path / "prev.pt").read_bytes() == b"previous"


def assert_fails_in_one_line(module, args, capsys, message):
    """The in-process twin of assert_one_line_error (same run_cli path, no interpreter start-up)."""
    with pytest.raises(SystemExit) as exit_info:
        module.main(args + ["--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert message in err, err


@pytest.mark.parametrize("module, args, message", [
    (ebm_sample, ["--figure", "{tmp}/file.txt/s.png"], "cannot write"),
    (ebm_export, ["--out", "{tmp}/file.txt/e.pt"], "cannot write"),
    (ebm_tune, ["--num_images", "99999999"], "exceeds the 2000 held-out training images"),
    (ebm_tune, ["--keys", "steps,bogus"], "unknown settings ['bogus']"),
])
def test_more_bad_arguments(tmp_path, capsys, module, args, message):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    assert_fails_in_one_line(module, [a.replace("{tmp}", str(tmp_path)) for a in args], capsys, message)


@pytest.mark.slow  # a smoke training
def test_a_short_run_touches_neither_models_nor_figures(tmp_path):
    tracked = [SHIPPED, *sorted((REPO_ROOT / "figures").glob("ebm_*.png"))]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tracked}
    done = run_script(["ebm/main.py", "--limit", "100", "--batch_size", "16", "--langevin_k", "1",
                       "--num_epochs", "1", "--logdir", str(tmp_path / "run"), "--device", "cpu"])
    assert done.returncode == 0, done.stderr[-1000:]
    assert "not copied to" in done.stdout and (tmp_path / "run" / "shipped.pt").is_file()
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tracked} == before


# ---------------------------------------------------------------- shipped model
@pytest.mark.slow
def test_shipped_checkpoint_is_the_shipped_form():
    assert SHIPPED.stat().st_size < 20e6
    payload = load_checkpoint(SHIPPED, "ebm")
    assert set(payload) == {"kind", "config", "format", "model"}
    assert payload["config"] == dataclasses.asdict(EBMConfig())  # the bare command trains exactly this model


def test_start_mixture_draws_images_near_its_clusters():
    images = load_mnist(train=True)[0][:2000]
    mixture = StartMixture(images, clusters=3, components=4)
    assert mixture.means.shape == (3, 784) and mixture.bases.shape == (3, 784, 4)
    assert mixture.weights.sum() == 2000
    draws = mixture.sample(50, torch.Generator().manual_seed(0))
    again = mixture.sample(50, torch.Generator().manual_seed(0))
    assert draws.shape == (50, 1, 28, 28) and torch.equal(draws, again) and 0 <= draws.min() and draws.max() <= 1
    nearest = torch.cdist(draws.flatten(1), mixture.means).min(1).values
    assert nearest.mean() < torch.cdist(torch.rand(50, 784), mixture.means).min(1).values.mean() / 2
    # the disk cache keeps a mixture as its state: the restored mixture draws the same images
    restored = StartMixture.from_state(torch.load(io.BytesIO(save_bytes(mixture.state())), weights_only=True))
    assert torch.equal(restored.sample(50, torch.Generator().manual_seed(0)), draws)


def save_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.slow
def test_shipped_model_beats_row_interpolation():
    res = evaluate_inpainting(load(SHIPPED), load_mnist(train=False)[0][:200], seed=42)
    assert res["mse"].mean() < res["mse_interpolation"].mean() < res["mse_corrupted"].mean()
