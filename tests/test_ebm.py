"""Energy-based model: CD loss and sign, replay buffer, divergence guard, inpainting invariants, CLI."""
import pytest
import torch

import ebm.main as ebm_main
from ebm import INPAINT_DEFAULTS, MlpBackbone, Trainer, TrainingDiverged
from mnistgen.checkpoint import save_checkpoint
from mnistgen.data import load_mnist
from mnistgen.utils import MODELS_DIR

SHIPPED = MODELS_DIR / "ebm.pt"


def make_trainer(seed=0, **kw):
    torch.manual_seed(seed)
    settings = dict(buffer_size=50, langevin_k=3, langevin_noise_std=0.005, langevin_lr=10.0, replay_p=0.95,
                    lr=1e-3, l2_coef=1.0, proj_norm=0.01)
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
    trainer = make_trainer(buffer_size=100)
    trainer.inpaint_neg_p = 0.5
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


# ---------------------------------------------------------------- divergence guard
def test_divergence_guard_on_nan_weights(tmp_path, digits):
    trainer = make_trainer()
    with torch.no_grad():
        trainer.model.fc4.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="diverged"):
        trainer.train_step(digits[:8])
    with pytest.raises(TrainingDiverged, match="refusing"):
        trainer.save(tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_training_rolls_back_then_stops_on_repeated_divergence(tmp_path, monkeypatch, capsys):
    def always_nan(self, batch_x):
        with torch.no_grad():
            self.model.fc4.bias.fill_(float("nan"))
        raise TrainingDiverged("energies diverged (forced)")

    monkeypatch.setattr(Trainer, "train_step", always_nan)
    with pytest.raises(SystemExit) as exit_info:
        ebm_main.main(["--limit", "64", "--batch_size", "16", "--logdir", str(tmp_path), "--figures_dir", str(tmp_path),
                       "--save_path", str(tmp_path / "ship.pt"), "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr()
    assert "rolled back" in err.out + err.err and "last good checkpoint" in err.err
    good = Trainer.from_checkpoint(tmp_path / "ebm_train.pt")  # the saved checkpoint is still clean
    assert good.weights_finite()
    assert not (tmp_path / "ship.pt").exists()


def test_sampler_collapse_rolls_back_then_stops_early(tmp_path, monkeypatch, capsys):
    """Healthy steps (E(x-) = E(x+)) up to step 8, then a gap of 1: the guard rolls back to the step-8
    checkpoint at half the learning rate and rewinds the log; after 3 rollbacks training stops early
    (no error: the weights are fine) and ships the best weights before the collapse."""
    calls = []

    def fake_step(self, batch_x):
        calls.append(1)
        self.x_neg = batch_x
        return dict(loss=0.0, e_pos=0.0, e_neg=0.0 if len(calls) <= 8 else 1.0, grad_norm=0.0)

    monkeypatch.setattr(Trainer, "train_step", fake_step)
    monkeypatch.setattr(ebm_main, "GAP_WINDOW", 3)
    ebm_main.main(["--limit", "64", "--batch_size", "16", "--num_epochs", "10", "--eval_every", "4",
                   "--val_images", "100", "--inpaint_steps", "2", "--logdir", str(tmp_path),
                   "--figures_dir", str(tmp_path), "--save_path", str(tmp_path / "ship.pt"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert "step 8: sampler collapsed" in out and "Adam lr now 5e-05" in out and "Adam lr now 1.25e-05" in out
    assert "training stops early" in out and "trained 10/40 steps" in out
    steps = [int(r["step"]) for r in ebm_main.CsvLog(tmp_path / "log.csv").rows()]
    assert steps == sorted(set(steps)) and max(steps) == 10  # rewound to 8 at each rollback
    assert torch.load(tmp_path / "ebm_train.pt", weights_only=True)["step"] == 8
    assert torch.load(tmp_path / "ebm_best.pt", weights_only=True)["step"] <= 8
    assert (tmp_path / "ship.pt").is_file()


# ---------------------------------------------------------------- inpainting and protocol
def test_inpainting_keeps_unmasked_pixels_and_range(digits):
    trainer = make_trainer()
    corrupted, mask = ebm_main.corrupt(digits[:16], seed=0)
    recovered = trainer.inpainting(corrupted, mask, steps=5, chains=2, noise_std=0.05)
    assert recovered.shape == corrupted.shape
    assert torch.equal(recovered[~mask], corrupted[~mask])  # bit for bit
    assert recovered.min() >= 0 and recovered.max() <= 1
    assert not torch.equal(recovered[mask], corrupted[mask])


def test_corruption_protocol_and_row_interpolation(digits):
    x = digits[:4]
    corrupted, mask = ebm_main.corrupt(x, seed=3)
    assert torch.equal(mask[0, 0, :, 0], torch.arange(28) % 2 == 0)
    assert torch.equal(corrupted[~mask], x[~mask]) and corrupted.min() >= 0 and corrupted.max() <= 1
    assert torch.equal(corrupted, ebm_main.corrupt(x, seed=3)[0])  # fixed seed
    interp = ebm_main.row_interpolation(corrupted, mask)
    assert torch.equal(interp[..., 0, :], x[..., 1, :])
    assert torch.allclose(interp[..., 4, :], (x[..., 3, :] + x[..., 5, :]) / 2)
    assert torch.equal(interp[~mask], x[~mask])


# ---------------------------------------------------------------- CLI
def test_smoke_train_resume_play_export(tmp_path, capsys):
    common = ["--limit", "64", "--batch_size", "16", "--langevin_k", "2", "--eval_every", "3", "--val_images", "100",
              "--inpaint_steps", "2", "--logdir", str(tmp_path / "run"), "--figures_dir", str(tmp_path / "fig"),
              "--save_path", str(tmp_path / "ebm.pt"),
              "--device", "cpu"]
    ebm_main.main(common + ["--num_epochs", "1"])
    assert (tmp_path / "ebm.pt").is_file() and (tmp_path / "run" / "negatives.png").is_file()
    assert (tmp_path / "fig" / "ebm_curves.png").is_file() and (tmp_path / "fig" / "ebm_negatives.png").is_file()
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 1 + 4
    ebm_main.main(common + ["--num_epochs", "2", "--resume"])
    assert "resumed from" in capsys.readouterr().out
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 1 + 8
    shipped = torch.load(tmp_path / "ebm.pt", weights_only=True)
    assert shipped["kind"] == "ebm" and "optimizer" not in shipped and "replay_buffer" not in shipped
    assert shipped["config"]["inpaint"]["steps"] == 2
    res = ebm_main.main(["--play", "--load_dir", str(tmp_path), "--num_images", "20",
                         "--figure", str(tmp_path / "fig.png"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("mean mse") == 3 and (tmp_path / "fig.png").is_file() and len(res["mse"]) == 20
    ebm_main.main(["--load_dir", str(tmp_path / "ebm.pt"), "--export", str(tmp_path / "exp.pt"),
                   "--inpaint_chains", "3", "--device", "cpu"])
    assert Trainer.from_checkpoint(tmp_path / "exp.pt").inpaint_config["chains"] == 3
    best = ebm_main.main(["--tune", "--load_dir", str(tmp_path / "exp.pt"), "--num_images", "8", "--val_images", "50",
                          "--tune_keys", "chains", "--device", "cpu"])
    assert set(best) == set(INPAINT_DEFAULTS) and "best on 8 held-out" in capsys.readouterr().out
    imgs = ebm_main.main(["--samples", "12", "--sample_steps", "3", "--load_dir", str(tmp_path / "exp.pt"),
                          "--figure", str(tmp_path / "samples.png"), "--device", "cpu"])
    assert imgs.shape == (12, 1, 28, 28) and (tmp_path / "samples.png").is_file()
    out = capsys.readouterr().out
    for name in ("EBM samples", "real training digits", "uniform noise"):
        assert f"{name}: classifier confidence" in out and "FID to the test set" in out


@pytest.mark.parametrize("kind", ["missing", "empty_folder", "other_model", "truncated"])
def test_bad_load_dir_is_one_line_error(tmp_path, capsys, kind):
    path = {"missing": tmp_path / "nope.pt", "empty_folder": tmp_path}.get(kind, tmp_path / "x.pt")
    if kind == "other_model":
        save_checkpoint(path, "vae", {}, model={})
    elif kind == "truncated":
        path.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        ebm_main.main(["--play", "--load_dir", str(path), "--num_images", "4", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_play_without_load_dir_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        ebm_main.main(["--play"])
    assert exit_info.value.code == 2 and "--load_dir" in capsys.readouterr().err


# ---------------------------------------------------------------- shipped model
def test_shipped_model_beats_row_interpolation():
    if not SHIPPED.is_file():
        pytest.skip("models/ebm.pt not shipped yet")
    assert SHIPPED.stat().st_size < 20e6
    trainer = Trainer.from_checkpoint(SHIPPED)
    payload = torch.load(SHIPPED, weights_only=True)
    assert "optimizer" not in payload and "replay_buffer" not in payload
    res = ebm_main.evaluate_inpainting(trainer, load_mnist(train=False)[0][:200], seed=42)
    assert res["mse"].mean() < res["mse_interpolation"].mean() < res["mse_corrupted"].mean()


def test_shipped_model_samples_digits_from_noise():
    """200 chains of SAMPLE_STEPS Langevin steps from U(0, 1) noise must look like digits to the classifier:
    an FID to the test set (classifier features) far below that of noise, and no class taking half the
    samples (the classifier calls every noise image an 8)."""
    if not SHIPPED.is_file():
        pytest.skip("models/ebm.pt not shipped yet")
    trainer = Trainer.from_checkpoint(SHIPPED)
    samples = ebm_main.draw_samples(trainer, 200, ebm_main.SAMPLE_STEPS)
    noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    quality, noise_quality = ebm_main.sample_quality(samples, "cpu"), ebm_main.sample_quality(noise, "cpu")
    assert quality["fid"] < 0.1 * noise_quality["fid"]
    assert max(quality["counts"]) < 100 and max(noise_quality["counts"]) >= 100
