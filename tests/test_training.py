"""The shared training scaffold on a toy task: loss goes down, resume is exact, rollbacks, shipping rules."""
import dataclasses

import pytest
import torch

from mnistgen.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mnistgen.training import RunOptions, StopEarly, Task, TrainingDiverged, fit


@dataclasses.dataclass
class ToyConfig:
    width: int = 4


class ToyTask(Task):
    """Least squares y = x w on 64 fixed points, batches of 8; optional failure injection."""
    kind = "toy"
    curve_panels = {"loss": ["loss"]}

    def __init__(self, fail_at=(), error=TrainingDiverged):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 4, generator=gen)
        self.y = self.x @ torch.tensor([1.0, -2.0, 3.0, 0.5]) + 0.01 * torch.randn(64, generator=gen)
        self.config = ToyConfig()
        self.net = torch.nn.Linear(4, 1)
        self.modules = {"model": self.net}
        self.optimizers = {"opt": torch.optim.Adam(self.net.parameters(), lr=0.05)}
        self.steps_per_epoch = 8
        self.fail_at, self.error, self.calls = set(fail_at), error, 0

    def batches(self, epoch, generator):
        order = torch.randperm(64, generator=generator)
        return [(self.x[order[i:i + 8]], self.y[order[i:i + 8]]) for i in range(0, 64, 8)]

    def train_step(self, batch):
        self.calls += 1
        if self.calls in self.fail_at:
            raise self.error("injected failure")
        x, y = batch
        loss = (self.net(x).squeeze(1) - y).pow(2).mean() + 0 * torch.rand(1).sum()  # consumes the global RNG
        self.optimizers["opt"].zero_grad()
        loss.backward()
        self.optimizers["opt"].step()
        return dict(loss=loss.item())

    def lr_scale(self, step):
        return 0.5 if step > 40 else 1.0

    def evaluate(self, step, run_dir):
        with torch.no_grad():
            return dict(mse=(self.net(self.x).squeeze(1) - self.y).pow(2).mean().item())

    def rank(self, metrics):
        return metrics["mse"]


def options(tmp_path, steps=48, **kw):
    return RunOptions(logdir=tmp_path / "run", total_steps=steps, eval_every=8, seed=1, progress=False,
                      default_save_path=tmp_path / "models" / "toy.pt", **kw)


def test_fit_lowers_the_loss_and_ships_the_best(tmp_path):
    torch.manual_seed(0)
    task = ToyTask()
    path = fit(task, options(tmp_path))
    assert path == tmp_path / "models" / "toy.pt"
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,mse") and len(rows) == 1 + 6
    mses = [float(r.split(",")[3]) for r in rows[1:]]
    assert mses[-1] < mses[0] / 5
    shipped = load_checkpoint(path, "toy")
    assert shipped["config"] == {"width": 4} and "optimizers" not in shipped
    assert shipped["model"]["weight"].dtype == torch.float16


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    whole = ToyTask()
    fit(whole, options(tmp_path / "a"))
    torch.manual_seed(0)
    fit(ToyTask(), options(tmp_path / "b", steps=24))   # a run stopped after 24 steps ...
    torch.manual_seed(123)                               # ... and resumed in a fresh process state
    resumed = ToyTask()
    fit(resumed, options(tmp_path / "b", resume=True))
    assert torch.equal(whole.net.weight, resumed.net.weight)
    log_a = (tmp_path / "a" / "run" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "b" / "run" / "log.csv").read_text().splitlines()
    assert [r.split(",")[:4] for r in log_a] == [r.split(",")[:4] for r in log_b]


def test_resume_trims_rows_written_after_the_last_save(tmp_path):
    fit(ToyTask(), options(tmp_path, steps=16))
    log = tmp_path / "run" / "log.csv"
    log.write_text(log.read_text() + "24,3,0.1,0.1,1,0.1\n")  # a row of work lost to a kill
    fit(ToyTask(), options(tmp_path, steps=32, resume=True))
    steps = [r.split(",")[0] for r in log.read_text().splitlines()[1:]]
    assert steps == ["8", "16", "24", "32"]


def test_divergence_rolls_back_at_half_the_learning_rate(tmp_path, capsys):
    task = ToyTask(fail_at={20})
    fit(task, options(tmp_path))
    assert "rolled back" in capsys.readouterr().out
    state = load_checkpoint(tmp_path / "run" / "last.pt", "toy")
    assert state["lr_factor"] == 0.5 and state["step"] == 48


def test_each_rollback_halves_the_rate_again(tmp_path):
    fit(ToyTask(fail_at={20, 21}), options(tmp_path))
    assert load_checkpoint(tmp_path / "run" / "last.pt", "toy")["lr_factor"] == 0.25


def test_repeated_divergence_gives_up_but_stop_early_ships(tmp_path):
    with pytest.raises(TrainingDiverged, match="gave up after 3 rollbacks"):
        fit(ToyTask(fail_at={10, 11, 12, 13}), options(tmp_path / "a"))
    path = fit(ToyTask(fail_at={10, 11, 12, 13}, error=StopEarly), options(tmp_path / "b"))
    assert path.exists()


def test_short_runs_never_ship_to_the_default_path(tmp_path):
    fit(ToyTask(), options(tmp_path, complete_run=False))
    assert not (tmp_path / "models" / "toy.pt").exists()
    assert (tmp_path / "run" / "shipped.pt").exists()
    fit(ToyTask(), options(tmp_path / "m", max_minutes=1e-9))
    assert not (tmp_path / "m" / "models" / "toy.pt").exists()


def test_resume_from_a_weights_only_checkpoint_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "run" / "last.pt", "toy", {"width": 4}, model={})
    with pytest.raises(CheckpointError, match="not a training state"):
        fit(ToyTask(), options(tmp_path, resume=True))


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / "run").mkdir()
    stale = tmp_path / "run" / f".last.pt.{2 ** 22 + 1}.tmp"  # a pid no process has
    stale.write_bytes(b"x" * 100)
    fit(ToyTask(), options(tmp_path, steps=8))
    assert not stale.exists()
