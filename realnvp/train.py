"""Train a RealNVP flow on MNIST, or print a checkpoint's test bits/dim (--eval).

    python realnvp/train.py                     # the split flow: models/realnvp.pt (the graders' inpainting)
    python realnvp/train.py --arch multiscale   # the multi-scale flow: models/realnvp_multiscale.pt (samples)

Each trains its shipped architecture and schedule (fixed seed) through the project's scaffold
(mnistgen.training): per epoch, the batch-norm statistics are recomputed over --bn_images training images,
the test bits/dim is measured (the best epoch is kept) and a 10x10 sample grid goes to --img_save_dir;
log.csv, curves.png, last.pt (for --resume) and best.pt go to --logdir. At the end the best model's
statistics are recomputed over the whole training set and it is shipped in fp16 when that leaves its test
bits/dim unchanged (else fp32), into --model_dir when given, else into models/ with its figures in
figures/ after a complete run (never after --limit or a --max_minutes stop).
Flags use underscores; the skeleton's dashed spellings (--batch-size, --model-dir, --img-save-dir, --no-cuda)
are accepted too.
"""
import argparse
import dataclasses
import math
import sys
from pathlib import Path

import torch

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.checkpoint import half_state, load_model, load_state
from mnistgen.data import load_mnist
from mnistgen.files import ensure_writable_dir
from mnistgen.training import Task, TrainingDiverged, check_outputs, fit, run_options
from mnistgen.utils import (BATCH_SIZE_RANGE, EPOCHS_RANGE, LR_RANGE, SEED_RANGE, CsvLog, UserError,
                            add_common_args, pick_device, plot_curves, positive_float, positive_int, run_cli,
                            save_image_grid, seed_everything)
from realnvp.realnvp import (ARCH_FIELDS, CHECKPOINT_NAMES, DEFAULT_PATH, KIND, NUM_INPUTS, PRESETS, SHIPPED_PATHS,
                             RealNVPConfig, bits_per_dim, build, evaluate_bpd, inpaint_mse, load, masked_inputs,
                             mode_inpainting, preprocess, recompute_batchnorm)

EVAL_SEED = 1234          # dequantization noise of the batch-norm recomputation and the test set
FP16_TOLERANCE = 5e-4     # bits/dim change allowed when shipping fp16 weights
WARMUP = 200              # steps of linear learning-rate warm-up
MODE_IMAGES = 1000        # test images of the per-epoch inpainting estimate (split flow)
EPOCHS = {"split": 10, "multiscale": 16}   # the shipped checkpoints' schedules
ARCH_FLAGS = ("hidden", "checker", "channel", "res_blocks", "num_hidden")


# ---------------------------------------------------------------------------------------------------------------
# Command line


def preset_defaults(field):
    """'split 16,48; multiscale 12,48,96': a config field's default in each preset that reads it (for help=)."""
    shown = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
    return "; ".join(f"{arch} {shown(getattr(c, field))}" for arch, c in PRESETS.items() if field in ARCH_FIELDS[arch])


def build_parser():
    p = add_common_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--no-cuda", dest="device", action="store_const", const="cpu",
                   help="the skeleton's spelling of --device cpu")
    p.add_argument("--arch", default="split", choices=list(PRESETS),
                   help="split: the graders' flow (a Gaussian p(bottom | top) times a multi-scale flow of the top "
                        "half); multiscale: the paper's multi-scale flow of the whole image (default: %(default)s). "
                        "The flags below override its preset")
    accepted = RealNVPConfig.RANGES  # the flags of config fields take the fields' ranges
    p.add_argument("--batch_size", "--batch-size", type=BATCH_SIZE_RANGE, default=64,
                   help="training batch size (default: 64)")
    p.add_argument("--epochs", type=EPOCHS_RANGE, default=None,
                   help="training epochs (default: " + "; ".join(f"{a} {n}" for a, n in EPOCHS.items()) + ")")
    p.add_argument("--lr", type=LR_RANGE, default=1e-3,
                   help=f"Adam learning rate, warmed up over {WARMUP} steps then cosine-decayed to 0 (default: 1e-3)")
    p.add_argument("--seed", type=SEED_RANGE, default=1, help="random seed (default: 1)")
    p.add_argument("--hidden", type=accepted["hidden"].comma_list, default=None,
                   help="channels of the coupling nets per resolution (multiscale: 28x28, 14x14, 7x7; split: 14x28, "
                        f"7x14) (default: {preset_defaults('hidden')})")
    p.add_argument("--checker", type=accepted["checker"].comma_list, default=None,
                   help=f"checkerboard couplings per resolution, 0 allowed (default: {preset_defaults('checker')})")
    p.add_argument("--channel", type=accepted["channel"].comma_list, default=None,
                   help=f"channel couplings after each squeeze (default: {preset_defaults('channel')})")
    p.add_argument("--res_blocks", type=accepted["res_blocks"], default=None,
                   help="residual blocks (two 3x3 convolutions each) per coupling net "
                        f"(default: {preset_defaults('res_blocks')})")
    p.add_argument("--num_hidden", type=accepted["num_hidden"], default=None,
                   help=f"split: hidden units of the Gaussian stage's MLP nets (default: {preset_defaults('num_hidden')})")
    p.add_argument("--bn_images", type=positive_int, default=10000,
                   help="training images for the per-epoch batch-norm statistics (default: 10000; the "
                        "shipped checkpoint's are recomputed over the whole training set)")
    p.add_argument("--logdir", metavar="DIR", default=None,
                   help="run folder: log.csv, curves.png, last.pt (for --resume), best.pt "
                        "(default: runs/realnvp or runs/realnvp_multiscale)")
    p.add_argument("--img_save_dir", "--img-save-dir", default=None,
                   help="folder of the per-epoch sample grids img_EPOCH.png (default: images/ in --logdir)")
    p.add_argument("--model_dir", "--model-dir", metavar="DIR", default=None,
                   help="write the shipped checkpoint (realnvp.pt or realnvp_multiscale.pt) into this folder "
                        "(default: models/, written only by a complete run: not with --limit or a --max_minutes stop)")
    p.add_argument("--figures_dir", default=None,
                   help="where the shipped model's sample grid and curves go (default: figures/, written only by a "
                        "complete run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --logdir from its last.pt")
    p.add_argument("--max_minutes", type=positive_float, default=None,
                   help="stop (resumable with --resume) after this many minutes of training (default: no limit)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="use only the first N training and test images (smoke runs; never ships to models/)")
    p.add_argument("--eval", action="store_true", help="only print the test bits/dim of --load_path")
    p.add_argument("--load_path", default=str(DEFAULT_PATH),
                   help="checkpoint for --eval (file or folder; default: models/realnvp.pt)")
    p.add_argument("--recompute_bn", action="store_true",
                   help="with --eval: recompute the batch-norm statistics over the training set first")
    return p


def model_config(args):
    """The --arch preset with the architecture flags given."""
    given = {f: getattr(args, f) for f in ARCH_FLAGS if getattr(args, f) is not None}
    for field in given:
        if field not in ARCH_FIELDS[args.arch]:
            raise UserError(f"--{field} does not apply to --arch {args.arch}")
    try:
        return dataclasses.replace(PRESETS[args.arch], **given)
    except ValueError as err:
        raise UserError(str(err)) from None


class RealNVPTask(Task):
    """Maximum likelihood of the dequantized, rescaled pixels' logits; kept by test bits/dim."""
    kind = KIND
    curve_panels = {"bits/dim": ["train_bpd", "test_bpd"]}

    def __init__(self, config, train_images, test_images, img_dir, args, device):
        self.config, self.train_images, self.test_images, self.img_dir = config, train_images, test_images, img_dir
        self.device, self.bn_images = device, args.bn_images
        if config.arch == "split":   # where the inpainting climbs to (bottom_mode), on test images, per epoch
            self.curve_panels = {**self.curve_panels, "inpainting MSE (conditional mode)": ["test_mode_mse"]}
            self.mode_raw = masked_inputs(test_images[:MODE_IMAGES], torch.Generator().manual_seed(0))[0]
        self.model = build(config).to(device)
        self.modules = {"model": self.model}
        self.optimizers = {"model": torch.optim.Adam(self.model.parameters(), lr=args.lr, weight_decay=1e-6)}
        self.batch_size = args.batch_size
        self.steps_per_epoch = len(self.train_images) // args.batch_size
        self.total_steps = args.epochs * self.steps_per_epoch
        self.noise = torch.randn(100, NUM_INPUTS, generator=torch.Generator().manual_seed(args.seed))   # sample grids
        self.epoch, self.test_bpd = 0, None

    def batches(self, epoch, generator):
        # shuffling and dequantization noise both come from the (seed, epoch) generator: resumable
        n = len(self.train_images)
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - n % self.batch_size, self.batch_size):
            yield preprocess(self.train_images[order[start:start + self.batch_size]], generator)

    def train_step(self, batch):
        x, log_scale = (t.to(self.device) for t in batch)
        self.model.train()
        log_probs = self.model.log_probs(x)
        loss = -log_probs.mean()
        if not torch.isfinite(loss):
            raise TrainingDiverged("non-finite training loss")
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 100.0)
        opt.step()
        with torch.no_grad():   # of this batch, with its own batch-norm statistics
            train_bpd = bits_per_dim(self.model, x, log_scale, log_probs.detach()).mean().item()
        return dict(loss=loss.item(), train_bpd=train_bpd)

    def lr_scale(self, step):
        """Linear warm-up over WARMUP steps, then cosine decay to 0 at the last step."""
        if step < WARMUP:
            return (step + 1) / WARMUP
        progress = min(1.0, (step - WARMUP) / max(1, self.total_steps - WARMUP))
        return 0.5 * (1 + math.cos(math.pi * progress))

    def evaluate(self, step, run_dir):
        recompute_batchnorm(self.model, self.train_images[: self.bn_images],
                            generator=torch.Generator().manual_seed(EVAL_SEED))
        self.epoch = math.ceil(step / self.steps_per_epoch)
        self.test_bpd = evaluate_bpd(self.model, self.test_images, seed=EVAL_SEED)
        self.model.save_images(self.epoch, self.img_dir, noise=self.noise.to(self.device))
        metrics = dict(test_bpd=self.test_bpd)
        if self.config.arch == "split":   # where the protocol's 1,000 steps end, in one pass
            metrics["test_mode_mse"] = inpaint_mse(mode_inpainting(self.model, self.mode_raw), self.mode_raw)["masked"]
        return metrics

    def rank(self, metrics):
        return metrics["test_bpd"]

    def healthy(self):
        return self.test_bpd is None or math.isfinite(self.test_bpd)

    def shipped_state(self):
        # fp32: whether fp16 keeps the bits/dim is decided once, in finalize
        return dict(model=self.model.state_dict(), epoch=self.epoch, test_bpd=self.test_bpd)

    def finalize(self, best_path, run_dir):
        """The best model with batch-norm statistics over the whole training set, in fp16 when that leaves its
        test bits/dim unchanged (the split flow's running variances can exceed fp16's range)."""
        model, _, ckpt = load_model(best_path, KIND, RealNVPConfig, build, device=self.device)
        recompute_batchnorm(model, self.train_images, generator=torch.Generator().manual_seed(EVAL_SEED))
        bpd32 = evaluate_bpd(model, self.test_images, seed=EVAL_SEED)
        state16 = half_state(model.state_dict())
        model16 = load_state(build(self.config), state16).float().to(self.device).eval()
        bpd16 = evaluate_bpd(model16, self.test_images, seed=EVAL_SEED)
        use16 = abs(bpd16 - bpd32) <= FP16_TOLERANCE
        print(f"final: test bits/dim {bpd32:.4f} (fp32), {bpd16:.4f} (fp16) -> ships {'fp16' if use16 else 'fp32'}")
        return dict(model=state16 if use16 else model.state_dict(), epoch=ckpt.get("epoch"),
                    test_bpd=bpd16 if use16 else bpd32, bn_images=len(self.train_images),
                    dtype="float16" if use16 else "float32")

    def write_figures(self, shipped_path, run_dir, figures_dir):
        shipped = load(shipped_path, self.device)
        with torch.no_grad():
            samples = torch.sigmoid(shipped.sample(noise=self.noise.to(self.device))).view(-1, 1, 28, 28)
        name = SHIPPED_PATHS[self.config.arch].stem   # realnvp or realnvp_multiscale
        save_image_grid(samples, figures_dir / f"{name}_samples.png")
        plot_curves(CsvLog(run_dir / "log.csv").rows(), "epoch", self.curve_panels, figures_dir / f"{name}_curves.png",
                    title=f"RealNVP ({self.config.arch}) on MNIST")
        print(f"figures: {name}_samples.png, {name}_curves.png in {figures_dir}")


def run_eval(args, device):
    model, config, ckpt = load_model(args.load_path, KIND, RealNVPConfig, build, CHECKPOINT_NAMES, device=device)
    test_images = load_mnist(train=False, data_root=args.data_root)[0][: args.limit]
    if args.recompute_bn:
        train_images = load_mnist(train=True, data_root=args.data_root)[0][: args.limit]
        recompute_batchnorm(model, train_images, generator=torch.Generator().manual_seed(EVAL_SEED))
    bpd = evaluate_bpd(model, test_images, seed=EVAL_SEED)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.load_path}: {config.arch} flow, {n_params / 1e6:.2f}M parameters, "
          f"epoch {ckpt.get('epoch')}; test bits/dim {bpd:.4f} on {len(test_images)} test images")
    return bpd


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    args.epochs = args.epochs or EPOCHS[args.arch]
    device = pick_device(args.device)
    if args.eval:
        return run_eval(args, device)
    config = model_config(args)
    shipped_name = SHIPPED_PATHS[args.arch].stem   # realnvp or realnvp_multiscale: runs/NAME, models/NAME.pt
    args.save_path = args.model_dir and str(Path(args.model_dir) / f"{shipped_name}.pt")
    train_images, test_images = (load_mnist(train=split, data_root=args.data_root)[0][: args.limit]
                                 for split in (True, False))
    if len(train_images) < args.batch_size:
        raise UserError(f"--batch_size {args.batch_size} is larger than the {len(train_images)} training images")
    steps_per_epoch = len(train_images) // args.batch_size
    opts = run_options(args, shipped_name, args.epochs * steps_per_epoch, eval_every=steps_per_epoch,
                       save_flag="--model_dir")
    check_outputs(opts.save_path, opts.figures_dir, opts.logdir, ("--model_dir", "--figures_dir", "--logdir"))
    img_dir = ensure_writable_dir(args.img_save_dir or opts.logdir / "images", "sample-grid folder (--img_save_dir)")
    seed_everything(args.seed)   # the initial weights (a resumed run reloads its own)
    task = RealNVPTask(config, train_images, test_images, img_dir, args, device)
    n_params = sum(p.numel() for p in task.model.parameters())
    print(f"{config.arch} flow, {n_params / 1e6:.2f}M parameters, {len(train_images)} training images")
    return fit(task, opts)


if __name__ == "__main__":
    main()
