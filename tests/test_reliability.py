"""The shared layer's failure paths: checkpoint messages, config checks, atomic files, the report going on past a
broken model, and the one table of bad checkpoints every model's loading command is run against. Bad flags and
outputs of one model live in that model's test file."""
import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch

from classifier.model import ClassifierConfig, build as build_classifier
from conftest import assert_one_line_error, run_script
from ebm.ebm import EBMConfig, backbone
from gan.gan import GANConfig, build as build_gan
from mnistgen.checkpoint import (CheckpointError, check_finite, config_from_dict, load_checkpoint, load_model,
                                 load_state, save_checkpoint)
from mnistgen.files import atomic_torch_save, ensure_writable, remove_stale_tmp
from mnistgen.utils import UserError, positive_float, take_first
from realnvp.realnvp import PRESETS, RealNVPConfig, build as build_flow
from vae.vae import VAEConfig, build as build_vae


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


# ---------------------------------------------------------------------------------------------- bad checkpoints

@dataclasses.dataclass
class Loader:
    """A model's command that loads a checkpoint, a tiny valid checkpoint of that model, and the parts of it the
    faults break. The command runs in a scratch folder: {ckpt} stands for the checkpoint's path, {dir} for the
    folder; `previous` are an earlier run's outputs there, which a failed run must leave as they were."""
    command: List[str]
    kind: str
    config: object                          # a tiny config of the model
    build: Callable                         # config -> the module whose state_dict the checkpoint holds
    tensor: str                             # a tensor of that state_dict, given the wrong shape
    wrong_type: str                         # an int config field, given a string
    out_of_range: Tuple[str, object, str]   # (config field, a value outside its range, the message)
    missing_key: Optional[Tuple[Callable, str]]  # (edit of the config dict, the message); None: no field is required
    weights: str = "model"                  # the checkpoint's entry that holds the state_dict
    other_kind: str = "vae"                 # another model's kind, for "another model's checkpoint"
    previous: Dict[str, bytes] = dataclasses.field(default_factory=dict)

    def save(self, folder, change=None):
        """folder/bad.pt: the tiny checkpoint (freshly initialised weights), edited by change(ckpt dict) first."""
        torch.manual_seed(0)
        ckpt = {"kind": self.kind, "config": dataclasses.asdict(self.config), "format": 1,
                self.weights: self.build(self.config).state_dict()}
        if change is not None:
            change(ckpt)
        torch.save(ckpt, folder / "bad.pt")
        return folder / "bad.pt"


def drop(key):
    return lambda config: config.pop(key)


def multiscale_without_hidden(config):
    """Every RealNVPConfig field has a default (the shipped split flow's), so a missing key fails only where its
    default does not fit: a multi-scale flow without its three `hidden` widths."""
    config.clear()
    config.update({k: v for k, v in dataclasses.asdict(PRESETS["multiscale"]).items() if k != "hidden"})


REALNVP = Loader(["realnvp/inpainting.py", "--load_path", "{ckpt}", "--num_images", "2", "--json", "{dir}/r.json",
                  "--savedir", "{dir}/pictures"], "realnvp",
                 RealNVPConfig(num_hidden=8, hidden=(2, 2), res_blocks=0, checker=(1, 1), channel=(1,)), build_flow,
                 tensor="0.scale_net.0.weight", wrong_type="num_hidden",
                 out_of_range=("arch", "bogus", "unknown architecture 'bogus'"),
                 missing_key=(multiscale_without_hidden, "arch multiscale: hidden and checker take 3 values"),
                 previous={"r.json": b"previous figures", "pictures/0.png": b"previous picture"})

LOADERS = {
    "vae": Loader(["vae/vae.py", "--eval", "--load_path", "{ckpt}"], "vae",
                  VAEConfig((1, 28, 28), 10, 2, hidden_size=4), build_vae, tensor="z_mean.weight",
                  wrong_type="hidden_size",
                  out_of_range=("temperature", -1.0, "temperature must be a number in (0, 10], got -1.0"),
                  missing_key=(drop("latent_size"), "config lacks ['latent_size']"), other_kind="gan",
                  previous={"vae_generated_samples.pt": b"earlier samples"}),  # --eval writes to the current folder
    "gan": Loader(["gan/gan.py", "--eval", "--load_path", "{ckpt}"], "gan", GANConfig(2, 10, (1, 28, 28), 4), build_gan,
                  weights="g", tensor="fc3.weight", wrong_type="hidden_size",
                  out_of_range=("truncation", 0.0, "truncation must be a number in (0, 10], got 0.0"),
                  missing_key=(drop("hidden_size"), "config lacks ['hidden_size']"),
                  previous={"gan_generated_samples.pt": b"earlier samples",
                            "gan_generated_samples.png": b"earlier grid"}),
    # every EBMConfig field has a default: a key left out takes it (test_ebm.py), so no "missing config key" row
    "ebm": Loader(["ebm/main.py", "--play", "--load_dir", "{ckpt}", "--num_images", "2", "--figure", "{dir}/fig.png"],
                  "ebm", EBMConfig(hidden_size=4), backbone, tensor="fc2.weight", wrong_type="hidden_size",
                  out_of_range=("replay_p", 2.0, "replay_p must be a probability in [0, 1], got 2.0"), missing_key=None,
                  previous={"fig.png": b"previous figure"}),
    "realnvp": REALNVP,
    "realnvp-train-eval": dataclasses.replace(REALNVP, command=["realnvp/train.py", "--eval", "--load_path", "{ckpt}"],
                                              previous={}),
    # every ClassifierConfig field has a default: no "missing config key" row
    "classifier": Loader(["classifier/train.py", "--test", "--load_path", "{ckpt}"], "classifier",
                         ClassifierConfig(width=4, feature_dim=8), build_classifier, tensor="head.1.weight",
                         wrong_type="width", out_of_range=("width", 0, "width must be an integer in [1, 512], got 0"),
                         missing_key=None),
}


def nan_weights(state):
    for name, tensor in state.items():
        if torch.is_floating_point(tensor):
            state[name] = tensor * float("nan")


def truncated_file(m, folder):
    """The first half of the checkpoint, as a killed copy leaves it."""
    whole = m.save(folder).read_bytes()
    (folder / "bad.pt").write_bytes(whole[: len(whole) // 2])
    return folder / "bad.pt", "is not a readable checkpoint (the file is truncated or not a torch checkpoint)"


def folder_without_a_checkpoint(m, folder):
    (folder / "empty").mkdir()
    return folder / "empty", f"no checkpoint in folder {folder / 'empty'}"


# each fault: (loader, scratch folder) -> (the path given to the command, what its one stderr line must say)
FAULTS = {
    "unknown config key": lambda m, d: (m.save(d, lambda c: c["config"].update(bogus=1)),
                                        "unknown config entries ['bogus']"),
    "missing config key": lambda m, d: (m.save(d, lambda c: m.missing_key[0](c["config"])), m.missing_key[1]),
    "config value of the wrong type": lambda m, d: (m.save(d, lambda c: c["config"].update({m.wrong_type: "big"})),
                                                    f"config entry {m.wrong_type}='big' is not a int"),
    "config value out of range": lambda m, d: (
        m.save(d, lambda c: c["config"].update({m.out_of_range[0]: m.out_of_range[1]})), m.out_of_range[2]),
    "no weights entry": lambda m, d: (m.save(d, lambda c: c.pop(m.weights)), f"has no '{m.weights}' weights"),
    "NaN weights": lambda m, d: (m.save(d, lambda c: nan_weights(c[m.weights])), "holds NaN or infinite values"),
    "wrong-shape tensor": lambda m, d: (m.save(d, lambda c: c[m.weights].update({m.tensor: torch.zeros(3, 5)})),
                                        f"tensor {m.tensor} has shape (3, 5), the model needs"),
    "another model's checkpoint": lambda m, d: (
        m.save(d, lambda c: c.update(kind=m.other_kind)),
        f"holds a checkpoint of the {m.other_kind} model, not of the {m.kind} model"),
    "missing file": lambda m, d: (d / "nowhere.pt", f"no checkpoint at {d / 'nowhere.pt'}"),
    "truncated file": truncated_file,
    "folder without a checkpoint": folder_without_a_checkpoint,
}
BAD_CHECKPOINT_CASES = [pytest.param(model, fault, id=f"{model}-{fault}") for model in LOADERS for fault in FAULTS
                        if fault != "missing config key" or LOADERS[model].missing_key is not None]


def folder_contents(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else "folder" for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("model", LOADERS)
def test_the_tiny_checkpoints_load(tmp_path, model):
    """Unbroken, each tiny checkpoint loads: in the table below only the fault is wrong."""
    m = LOADERS[model]
    load_model(m.save(tmp_path), m.kind, type(m.config), m.build, key=m.weights)


@pytest.mark.parametrize("model, fault", BAD_CHECKPOINT_CASES)
def test_a_bad_checkpoint_is_one_line_and_leaves_the_previous_outputs(tmp_path, model, fault):
    """Each model's loading command, in this process: exit 2, one stderr line naming the fault, no traceback, and
    nothing in its folder written, removed or added (an earlier run's samples, grid, figure, json, pictures)."""
    m = LOADERS[model]
    path, message = FAULTS[fault](m, tmp_path)
    for name, data in m.previous.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    before = folder_contents(tmp_path)
    command = [arg.format(ckpt=path, dir=tmp_path) for arg in m.command] + ["--device", "cpu"]
    assert_one_line_error(run_script(command, cwd=tmp_path), message)
    assert folder_contents(tmp_path) == before
