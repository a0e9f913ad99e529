"""Class-conditional VAE: shapes, loss, a smoke run of the script, its errors, and the shipped checkpoint."""
import torch
import pytest

import vae.vae as vae_module
from mnistgen.checkpoint import save_checkpoint
from mnistgen.data import load_mnist
from vae.vae import CVAE, DEFAULT_PATH, generate_samples, kl_divergence, load_vae, main, negative_elbo


def one_hot(labels):
    return torch.nn.functional.one_hot(labels, 10).float()


def test_shapes_and_ranges():
    torch.manual_seed(0)
    model = CVAE(784, 10, 100)
    x, y = torch.rand(8, 1, 28, 28), one_hot(torch.arange(8))
    mean, logstd = model.encode(x, y)
    assert mean.shape == logstd.shape == (8, 100)
    recon = model.decode(mean, y)
    assert recon.shape == (8, 784) and 0 <= recon.min() and recon.max() <= 1
    imgs = model.sample(torch.randn(8, 100), y)
    assert imgs.shape == (8, 1, 28, 28) and 0 <= imgs.min() and imgs.max() <= 1
    assert not imgs.requires_grad


def test_generate_samples_layout():
    torch.manual_seed(0)
    samples = generate_samples(CVAE(784, 10, 100), 3, "cpu")
    assert samples["imgs"].shape == (30, 1, 28, 28)
    assert samples["labels"].tolist() == list(range(10)) * 3  # rows of 10: column c = class c


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
    model = CVAE(784, 10, 100)
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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One epoch on 256 images (no per-epoch classifier checks) -> (tmp dir, checkpoint path)."""
    tmp = tmp_path_factory.mktemp("vae")
    flags = ["--limit", "256", "--batch_size", "64", "--check_per_class", "0", "--kl_warmup", "1",
             "--logdir", str(tmp / "run"), "--save_path", str(tmp / "vae.pt"), "--device", "cpu"]
    main(flags + ["--num_epochs", "1"])
    main(flags + ["--num_epochs", "2", "--resume"])
    return tmp, tmp / "vae.pt"


def test_smoke_run_logs_and_resumes(tiny_run):
    tmp, ckpt = tiny_run
    assert ckpt.is_file() and (tmp / "run" / "last.pt").is_file()
    assert (tmp / "run" / "curves.png").is_file() and (tmp / "run" / "grids" / "epoch_002.png").is_file()
    rows = (tmp / "run" / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,train_nelbo") and [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    model = load_vae(ckpt)
    assert model.recon_logstd.dtype == torch.float32  # fp16 weights cast back on load


def test_eval_writes_the_assignment_format(tiny_run, monkeypatch, capsys):
    tmp, ckpt = tiny_run
    monkeypatch.setattr(vae_module, "try_scorer", lambda device, data_root: None)  # keep the test fast
    main(["--eval", "--load_path", str(ckpt), "--samples_path", str(tmp / "s.pt"),
          "--grid_path", str(tmp / "grid.png"), "--device", "cpu"])
    samples = torch.load(tmp / "s.pt", weights_only=True)
    assert set(samples) == {"imgs", "labels"}
    assert samples["imgs"].shape == (10000, 1, 28, 28) and samples["imgs"].dtype == torch.float32
    assert 0 <= samples["imgs"].min() and samples["imgs"].max() <= 1
    assert samples["labels"].dtype == torch.int64 and torch.bincount(samples["labels"]).tolist() == [1000] * 10
    assert (tmp / "grid.png").is_file()
    assert "active units" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["gan", "missing", "truncated"])
def test_bad_checkpoints_exit_2_with_one_line(tiny_run, case, capsys):
    tmp, ckpt = tiny_run
    path = tmp / f"bad_{case}.pt"
    if case == "gan":
        save_checkpoint(path, "gan", {}, g={}, d={})
    elif case == "truncated":
        data = ckpt.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit) as exc:
        main(["--eval", "--load_path", str(path), "--samples_path", str(tmp / "never.pt")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert not (tmp / "never.pt").exists()


def test_shipped_checkpoint_quality():
    """The exact 10,000 samples of `--eval` (seed 42): accuracy >= 99% and per-class FID below the
    collapsed reference (3.6). All 10,000 rather than 1,000: at 99.1% true accuracy a 1,000-sample
    subset falls under 99% by chance about a third of the time."""
    if not DEFAULT_PATH.exists():
        pytest.skip("models/vae.pt not shipped yet")
    from classifier.model import get_scorer
    assert DEFAULT_PATH.stat().st_size < 20e6
    model = load_vae(DEFAULT_PATH)
    torch.manual_seed(42)
    samples = generate_samples(model, 1000, "cpu")
    score = get_scorer("cpu").score(samples["imgs"], samples["labels"])
    assert score["accuracy"] >= 0.99
    assert score["class_fid"] < 3.0
