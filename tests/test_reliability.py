"""The shared layer's failure paths: checkpoint messages, config checks, atomic files, the report going on past a
broken model. Per-model bad-input tables live in each model's test file."""
import dataclasses
from typing import Optional, Tuple

import pytest
import torch

from conftest import run_script
from mnistgen.checkpoint import CheckpointError, check_finite, config_from_dict, load_checkpoint, load_state, save_checkpoint
from mnistgen.files import atomic_torch_save, ensure_writable, remove_stale_tmp
from mnistgen.utils import UserError, positive_float, take_first


@dataclasses.dataclass
class Cfg:
    width: int
    rate: float = 0.5
    name: str = "x"
    sizes: Tuple[int, ...] = (1, 2)
    clip: Optional[float] = None


@pytest.mark.parametrize("data, message", [
    ({"width": 3, "bogus": 1}, "unknown config entries ['bogus']"),
    ({"rate": 0.1}, "config lacks ['width']"),
    ({"width": "big"}, "width='big' is not a int"),
    ({"width": 3, "rate": float("nan")}, "rate=nan"),
    ({"width": 3, "sizes": [1, "a"]}, "sizes="),
    ({"width": True}, "width=True"),
])
def test_config_errors_are_one_line(data, message):
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(Cfg, data, "x.pt")


def test_config_round_trip_turns_lists_into_tuples():
    cfg = config_from_dict(Cfg, {"width": 3, "sizes": [4, 5], "clip": 0.1}, "x.pt")
    assert cfg == Cfg(width=3, sizes=(4, 5), clip=0.1)


def test_random_bytes_message_is_short_and_whole(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(torch.randint(0, 256, (5000,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, "vae")
    text = str(err.value)
    assert "PyTorch 2.6" not in text and len(text) < 200 and "\n" not in text


def test_other_model_message_reads_well(tmp_path):
    save_checkpoint(tmp_path / "e.pt", "ebm", {}, model={})
    with pytest.raises(CheckpointError, match="holds a checkpoint of the ebm model, not of the vae model"):
        load_checkpoint(tmp_path / "e.pt", "vae")


def test_wrong_shape_names_the_tensor():
    net = torch.nn.Linear(3, 2)
    state = {"weight": torch.zeros(5, 3), "bias": torch.zeros(2)}
    with pytest.raises(CheckpointError, match="tensor weight has shape"):
        load_state(net, state, "x.pt")


def test_nan_weights_are_refused():
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.mul_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        check_finite(net, "x.pt")


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "samples.pt"
    atomic_torch_save({"a": torch.ones(3)}, path)

    class Exploding:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"a": torch.zeros(10_000), "b": Exploding()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.pt"]  # no temporary left behind


def test_stale_temporaries_are_cleaned_and_nothing_else(tmp_path):
    import os
    dead_pid = 2 ** 22 + 12345  # above any pid this machine hands out
    (tmp_path / f".x.pt.{dead_pid}.tmp").write_bytes(b"x")
    (tmp_path / "old.pt.tmp").write_bytes(b"x")
    (tmp_path / f".y.pt.{os.getppid()}.tmp").write_bytes(b"x")  # a live writer's temporary
    (tmp_path / "notes.tmp").write_bytes(b"x")                   # not ours
    remove_stale_tmp(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".y.pt.{os.getppid()}.tmp", "notes.tmp"]


def test_samples_files_are_byte_reproducible(tmp_path):
    atomic_torch_save({"a": torch.arange(5)}, tmp_path / "a.pt")
    atomic_torch_save({"a": torch.arange(5)}, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_unwritable_output_is_refused_up_front(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        ensure_writable(blocker / "out.pt")
    with pytest.raises(UserError, match="is a folder"):
        ensure_writable(tmp_path)


def test_flag_messages_say_what_is_accepted():
    with pytest.raises(Exception, match="finite number > 0"):
        positive_float("-1")
    with pytest.raises(Exception, match="finite number > 0"):
        positive_float("0")
    with pytest.raises(UserError, match="--num_images 5 exceeds the 3 test images"):
        take_first([1, 2, 3], 5, "test images")


@pytest.mark.slow
def test_report_goes_on_past_a_broken_model(tmp_path):
    """A NaN classifier is marked BROKEN (exit 2 at the end, one stderr line) and the other models still appear."""
    from mnistgen.utils import MODELS_DIR
    ckpt = torch.load(MODELS_DIR / "classifier.pt", weights_only=True)
    ckpt["model"] = {k: v * float("nan") if torch.is_floating_point(v) else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, tmp_path / "classifier.pt")
    (tmp_path / "vae.pt").write_bytes((MODELS_DIR / "vae.pt").read_bytes())
    proc = run_script(["-m", "report", "--only", "classifier", "VAE", "--models_dir", str(tmp_path)])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "BROKEN" in proc.stdout and "NaN or infinite" in proc.stdout
    # the VAE is scored with the shipped classifier, not the broken copy, so its rows still appear
    assert "VAE accuracy" in proc.stdout
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error:")


@pytest.mark.parametrize("section, model", [("EBM", "EBM"), ("RealNVP", "RealNVP (split)"),
                                           ("RealNVP-multiscale", "RealNVP multi-scale")])
def test_report_rows_without_a_classifier_say_the_samples_are_not_scored(section, model):
    """Without the classifier, `figures` returns `samples_unavailable` instead of scores: the sample rows are left
    out and one row says why (no KeyError, no traceback)."""
    from report.__main__ import cell
    from report.table import SECTIONS
    rows = next(s for s in SECTIONS if s.name == section).rows
    figures = dict(mse=0.1, mse_corrupted=0.2, mse_interpolation=0.3, sample_steps=300, test_bpd=1.7, num_images=20,
                   inpaint_mse=0.03, nn_mse=0.06, recorded={}, samples_unavailable="no classifier at models/x.pt")
    shown = [tuple(cell(c, figures) for c in row[:3]) for row in rows if len(row) < 4 or row[3](figures)]
    assert (f"{model} samples", "not scored", "no classifier at models/x.pt") in shown
    assert not any("FID" in label or "rarest" in label for label, _, _ in shown)
