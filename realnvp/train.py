"""Train the RealNVP flow on MNIST, or print a checkpoint's test bits/dim (--eval).

`python realnvp/train.py` trains the shipped architecture (fixed seed) through the project's scaffold
(mnistgen.training): per epoch, the batch-norm statistics are recomputed over --bn-images training
images, the test bits/dim is measured (the best epoch is kept), a 10x10 sample grid goes to
--img-save-dir; log.csv, curves.png, last.pt (for --resume) and best.pt go to --log-dir. At the end
the best model's statistics are recomputed over the whole training set and it is shipped in fp16 when
that leaves its test bits/dim unchanged (else fp32): to --model-dir/realnvp.pt when given, else to
models/realnvp.pt and figures/ after a complete run (never after --limit or a --max-minutes stop).
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
from mnistgen.utils import (CsvLog, UserError, add_common_args, nonnegative_float, pick_device, plot_curves,
                            positive_float, positive_int, run_cli, save_image_grid, seed_everything)
from realnvp import (ARCH_FIELDS, CHECKPOINT_NAMES, DEFAULT_PATH, KIND, NUM_INPUTS, PRESETS, RealNVPConfig,
                     bits_per_dim, build, evaluate_bpd, load, preprocess, recompute_batchnorm)
from realnvp.realnvp import (CURVATURE_LIMIT, inpaint_mse, inpainting_loss, masked_inputs, mode_curvature,
                             mode_inpainting)

EVAL_SEED = 1234          # dequantization noise of the batch-norm recomputation and the test set
FP16_TOLERANCE = 5e-4     # bits/dim change allowed when shipping fp16 weights
WARMUP = 200              # steps of linear learning-rate warm-up
MODE_IMAGES = 1000        # test images of the per-epoch inpainting estimate (split flows)
DEFAULT_MODE_WEIGHT = 0.0 # --mode-weight of the shipped flow
CURVATURE_IMAGES = 200    # of those, the images whose curvature at the maximum is logged per epoch


class DashedParser(argparse.ArgumentParser):
    """The skeleton spells this script's flags with dashes (--batch-size); the shared flags added by
    add_common_args are spelled the same way here (--data-root), their destinations keep underscores."""

    def add_argument(self, *names, **kwargs):
        return super().add_argument(*(n.replace("_", "-") if n.startswith("--") else n for n in names), **kwargs)


def int_list(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text}")
    return values


def shipped_file(folder):
    """--model-dir names the folder (the skeleton's flag); the shipped checkpoint is FOLDER/realnvp.pt."""
    return str(Path(folder) / "realnvp.pt")


def preset_defaults(field):
    """'split 16,48; conv 8,24,48': a config field's default in each preset that reads it (for help=)."""
    shown = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
    return "; ".join(f"{arch} {shown(getattr(c, field))}" for arch, c in PRESETS.items() if field in ARCH_FIELDS[arch])


def build_parser():
    p = add_common_args(DashedParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--batch-size", type=positive_int, default=64, help="training batch size (default: 64)")
    p.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default: 10)")
    p.add_argument("--lr", type=positive_float, default=1e-3,
                   help=f"Adam learning rate, warmed up over {WARMUP} steps then cosine-decayed to 0 (default: 1e-3)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--arch", default=RealNVPConfig.arch, choices=list(PRESETS),
                   help="split: conv flow on the top half x a Gaussian p(bottom | top) predicted by the skeleton's "
                        "MLP coupling; conv: multi-scale convolutional RealNVP on the whole image; mlp: the "
                        "skeleton's MLP flow (default: %(default)s). The flags below override its preset")
    p.add_argument("--hidden", type=int_list, default=None,
                   help="channels of the coupling nets per resolution (conv: 28x28, 14x14, 7x7; split: 14x28, "
                        f"7x14) (default: {preset_defaults('hidden')})")
    p.add_argument("--checker", type=int_list, default=None,
                   help=f"checkerboard couplings per resolution, 0 allowed (default: {preset_defaults('checker')})")
    p.add_argument("--channel", type=int_list, default=None,
                   help=f"channel couplings after each squeeze (default: {preset_defaults('channel')})")
    p.add_argument("--res-blocks", type=int, choices=range(0, 5), default=None,
                   help="residual blocks (two 3x3 convolutions each) per coupling net "
                        f"(default: {preset_defaults('res_blocks')})")
    p.add_argument("--num-blocks", type=positive_int, default=None,
                   help=f"coupling blocks (default: {preset_defaults('num_blocks')})")
    p.add_argument("--num-hidden", type=positive_int, default=None,
                   help="hidden units of the MLP couplings (split: of the bottom-half coupling) "
                        f"(default: {preset_defaults('num_hidden')})")
    p.add_argument("--bottom-couplings", type=int, choices=range(0, 17), default=None, metavar="{0..16}",
                   help="split: conv couplings that model the bottom half given the top after its Gaussian stage "
                        f"(default: {preset_defaults('bottom_couplings')})")
    p.add_argument("--bottom-hidden", type=positive_int, default=None,
                   help=f"split: channels of their nets (default: {preset_defaults('bottom_hidden')})")
    p.add_argument("--bottom-scale", default=None, choices=["top", "seen"],
                   help="split: what the bottom couplings' scales read: top (log p(bottom | top) then has one maximum, "
                        "which the inpainting climbs towards) or seen (also the bottom pixels they condition on) "
                        f"(default: {preset_defaults('bottom_scale')})")
    p.add_argument("--bottom-context", type=int, choices=range(1, 15), default=None, metavar="{1..14}",
                   help=f"split: rows of the top half their nets see (default: {preset_defaults('bottom_context')})")
    p.add_argument("--mode-weight", type=nonnegative_float, default=DEFAULT_MODE_WEIGHT,
                   help="split: weight of the squared error, in pixels summed over the bottom half, between a training "
                        "image and the maximum of log p(bottom | its top half) (the point the inpainting climbs "
                        "towards), added to the negative log-likelihood (default: %(default)s)")
    p.add_argument("--curvature-weight", type=nonnegative_float, default=0.0,
                   help="split: weight of the squared excess over --curvature-limit of the curvature of -log p(bottom "
                        "| top) (largest Hessian eigenvalue) at that maximum and between it and a noise start, added "
                        "to the loss (default: %(default)s)")
    p.add_argument("--curvature-limit", type=nonnegative_float, default=CURVATURE_LIMIT,
                   help="split: curvature allowed; the inpainting's fixed step of 0.2 converges below 10 "
                        "(default: %(default)s)")
    p.add_argument("--bn-images", type=positive_int, default=10000,
                   help="training images for the per-epoch batch-norm statistics (default: 10000; the "
                        "shipped checkpoint is recomputed over the whole training set)")
    p.add_argument("--log-dir", dest="logdir", metavar="DIR", default=None,
                   help="run folder: log.csv, curves.png, last.pt (for --resume), best.pt (default: runs/realnvp)")
    p.add_argument("--img-save-dir", default=None,
                   help="folder of the per-epoch sample grids img_EPOCH.png (default: images/ in --log-dir)")
    p.add_argument("--model-dir", dest="save_path", metavar="DIR", type=shipped_file, default=None,
                   help="write the shipped realnvp.pt into this folder (default: models/, written only by a "
                        "complete run: not with --limit or a --max-minutes stop)")
    p.add_argument("--figures-dir", default=None,
                   help="where realnvp_samples.png and realnvp_curves.png of the shipped model go (default: "
                        "figures/, written only by a complete run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --log-dir from its last.pt")
    p.add_argument("--max-minutes", type=positive_float, default=None,
                   help="stop (resumable with --resume) after this many minutes of training (default: no limit)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="use only the first N training and test images (smoke runs; never ships to models/)")
    p.add_argument("--eval", action="store_true", help="only print the test bits/dim of --load-path")
    p.add_argument("--load-path", default=str(DEFAULT_PATH),
                   help="checkpoint for --eval (file or folder; default: models/realnvp.pt)")
    p.add_argument("--recompute-bn", action="store_true",
                   help="with --eval: recompute the batch-norm statistics over the training set first")
    return p


def model_config(args):
    """The --arch preset with the architecture flags given."""
    given = {f: getattr(args, f) for f in ("hidden", "checker", "channel", "res_blocks", "num_blocks", "num_hidden",
                                           "bottom_couplings", "bottom_hidden", "bottom_scale", "bottom_context")
             if getattr(args, f) is not None}
    for field in given:
        if field not in ARCH_FIELDS[args.arch]:
            raise UserError(f"--{field.replace('_', '-')} does not apply to --arch {args.arch}")
    for flag in ("mode_weight", "curvature_weight"):
        if getattr(args, flag) and args.arch != "split":
            raise UserError(f"--{flag.replace('_', '-')} applies to --arch split only, not {args.arch}")
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
        self.device, self.bn_images, self.mode_weight = device, args.bn_images, args.mode_weight
        self.curvature_weight, self.curvature_limit = args.curvature_weight, args.curvature_limit
        if config.arch == "split":   # where the inpainting climbs to (bottom_mode), on test images, per epoch
            self.curve_panels = {**self.curve_panels, "inpainting MSE (conditional mode)": ["test_mode_mse"],
                                 "curvature at the mode (largest)": ["test_mode_curvature"]}
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
        log_probs, loss, stats = inpainting_loss(self.model, x, self.mode_weight, self.curvature_weight,
                                                 self.curvature_limit)
        if not torch.isfinite(loss):
            raise TrainingDiverged("non-finite training loss")
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 100.0)
        opt.step()
        with torch.no_grad():   # of this batch, with its own batch-norm statistics
            train_bpd = bits_per_dim(self.model, x, log_scale, log_probs.detach()).mean().item()
        return dict(loss=loss.item(), train_bpd=train_bpd, **stats)

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
        if self.config.arch == "split":   # an estimate only: the protocol equals it when its ascent converges
            metrics["test_mode_mse"] = inpaint_mse(mode_inpainting(self.model, self.mode_raw), self.mode_raw)["masked"]
            # above 10 the protocol's fixed step of 0.2 cannot converge to that maximum
            metrics["test_mode_curvature"] = mode_curvature(self.model, self.mode_raw[:CURVATURE_IMAGES]).max().item()
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
        save_image_grid(samples, figures_dir / "realnvp_samples.png")
        plot_curves(CsvLog(run_dir / "log.csv").rows(), "epoch", self.curve_panels, figures_dir / "realnvp_curves.png",
                    title="RealNVP on MNIST")
        print(f"figures: realnvp_samples.png, realnvp_curves.png in {figures_dir}")


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
    device = pick_device(args.device)
    if args.eval:
        return run_eval(args, device)
    config = model_config(args)
    train_images, test_images = (load_mnist(train=split, data_root=args.data_root)[0][: args.limit]
                                 for split in (True, False))
    if len(train_images) < args.batch_size:
        raise UserError(f"--batch-size {args.batch_size} is larger than the {len(train_images)} training images")
    steps_per_epoch = len(train_images) // args.batch_size
    opts = run_options(args, KIND, args.epochs * steps_per_epoch, eval_every=steps_per_epoch, save_flag="--model-dir")
    check_outputs(opts.save_path, opts.figures_dir, opts.logdir, ("--model-dir", "--figures-dir", "--log-dir"))
    img_dir = ensure_writable_dir(args.img_save_dir or opts.logdir / "images", "sample-grid folder (--img-save-dir)")
    seed_everything(args.seed)   # the initial weights (a resumed run reloads its own)
    task = RealNVPTask(config, train_images, test_images, img_dir, args, device)
    n_params = sum(p.numel() for p in task.model.parameters())
    print(f"{config.arch} flow, {n_params / 1e6:.2f}M parameters, {len(train_images)} training images")
    return fit(task, opts)


if __name__ == "__main__":
    main()
