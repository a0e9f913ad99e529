"""Train the RealNVP flow on MNIST, or evaluate a checkpoint's test bits/dim (--eval).

`python realnvp/train.py` reproduces the shipped models/realnvp.pt (fixed seed). Per epoch: train,
recompute the batch-norm statistics over --bn-images training images, test bits/dim, a 10x10
sample grid into --img-save-dir, a CSV row and curves under --log-dir, the best checkpoint by
test bits/dim (atomically) as --model-dir/realnvp.pt and a resumable state as --log-dir/last.pt.
After the last epoch the best model's statistics are recomputed over the whole training set, it
is evaluated again and written in fp16 when that leaves its test bits/dim unchanged.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.checkpoint import half_state, load_checkpoint, load_state, save_checkpoint
from mnistgen.data import batches, load_mnist
from mnistgen.utils import (MODELS_DIR, REPO_ROOT, CsvLog, UserError, add_common_args, pick_device,
                            plot_curves, positive_float, positive_int, run_cli, save_image_grid,
                            seed_everything)
from realnvp import (CONFIGS, CONV_CONFIG, DEFAULT_CONFIG, KIND, MLP_CONFIG, SPLIT_CONFIG, build_flow, evaluate_bpd,
                     load_flow, preprocess, recompute_batchnorm)

LOG_DIR = REPO_ROOT / "runs" / "realnvp"
FIGURES_DIR = REPO_ROOT / "figures"
EVAL_SEED = 1234          # dequantization noise of the test set: the same for every evaluation
FP16_TOLERANCE = 5e-4     # bits/dim change allowed when shipping fp16 weights


def int_list(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text}")
    return values


def build_parser():
    p = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--batch-size", type=positive_int, default=64, help="training batch size (default: 64)")
    p.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default: 10)")
    p.add_argument("--lr", type=positive_float, default=1e-3,
                   help="Adam learning rate, warmed up over 200 steps then cosine-decayed to 0 (default: 1e-3)")
    p.add_argument("--no-cuda", action="store_true", help="train on the CPU (same as --device cpu)")
    p.add_argument("--arch", default=DEFAULT_CONFIG["arch"], choices=list(CONFIGS),
                   help="split: conv flow on the top half x a Gaussian p(bottom | top) predicted by the skeleton's "
                        "MLP coupling; conv: multi-scale convolutional RealNVP on the whole image; mlp: the "
                        "skeleton's MLP flow (default: %(default)s)")
    p.add_argument("--hidden", type=int_list, default=None,
                   help="conv/split: channels of the coupling nets per level (conv: 28x28, 14x14, 7x7 = "
                        f"{_csv(CONV_CONFIG['hidden'])}; split: 14x28, 7x14 = {_csv(SPLIT_CONFIG['hidden'])})")
    p.add_argument("--checker", type=int_list, default=None,
                   help="conv/split: checkerboard couplings per level, 0 allowed (conv: "
                        f"{_csv(CONV_CONFIG['checker'])}; split: {_csv(SPLIT_CONFIG['checker'])})")
    p.add_argument("--channel", type=int_list, default=None,
                   help="conv/split: channel couplings after each squeeze (conv: "
                        f"{_csv(CONV_CONFIG['channel'])}; split: {_csv(SPLIT_CONFIG['channel'])})")
    p.add_argument("--res-blocks", type=int, choices=range(0, 5), default=None,
                   help="conv/split: residual blocks (two 3x3 convolutions each) per coupling net (default: 1)")
    p.add_argument("--num-blocks", type=positive_int, default=8, help="mlp: coupling blocks (default: 8)")
    p.add_argument("--num-hidden", type=positive_int, default=None,
                   help=f"mlp: hidden units (default: {MLP_CONFIG['num_hidden']}); split: hidden units of the "
                        f"bottom-half coupling (default: {SPLIT_CONFIG['num_hidden']})")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--model-dir", default=str(MODELS_DIR),
                   help="folder of the best checkpoint realnvp.pt (default: models/ of the repository)")
    p.add_argument("--img-save-dir", default=str(REPO_ROOT / "images"),
                   help="folder of the per-epoch sample grids (default: images/ of the repository)")
    p.add_argument("--log-dir", default=str(LOG_DIR),
                   help="CSV log, curves and the resumable last.pt (default: runs/realnvp)")
    p.add_argument("--figures-dir", default=str(FIGURES_DIR),
                   help="where the final samples/curves figures go (default: figures/)")
    p.add_argument("--resume", action="store_true", help="continue from --log-dir/last.pt")
    p.add_argument("--max-minutes", type=positive_float, default=None,
                   help="stop training after this many minutes (the epoch in progress ends early, the "
                        "learning rate is annealed by then as well); default: no limit")
    p.add_argument("--bn-images", type=positive_int, default=10000,
                   help="training images for the per-epoch batch-norm statistics (default: 10000; "
                        "the final checkpoint uses the whole training set)")
    p.add_argument("--limit", type=positive_int, default=None, help="use only the first N training/test images")
    p.add_argument("--eval", action="store_true", help="only print the test bits/dim of --load_path")
    p.add_argument("--load_path", default=str(MODELS_DIR / "realnvp.pt"),
                   help="checkpoint for --eval (file or folder; default: models/realnvp.pt)")
    p.add_argument("--recompute-bn", action="store_true",
                   help="with --eval: recompute the batch-norm statistics over the training set first")
    return p


def _csv(values):
    return ",".join(str(v) for v in values)


def model_config(args):
    """The architecture's defaults, overridden by the flags given."""
    config = dict(CONFIGS[args.arch])
    if args.arch == "mlp":
        config.update(num_blocks=args.num_blocks)
    for key in ("hidden", "checker", "channel", "res_blocks", "num_hidden"):
        value = getattr(args, key)
        if value is None:
            continue
        if key not in config:
            raise UserError(f"--{key.replace('_', '-')} does not apply to --arch {args.arch}")
        config[key] = value
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    if args.arch != "mlp":
        levels = len(CONFIGS[args.arch]["checker"])   # resolutions: conv 3, split 2
        if len(config["hidden"]) != levels or len(config["checker"]) != levels or len(config["channel"]) != levels - 1:
            raise UserError(f"--arch {args.arch}: --hidden and --checker take {levels} values (one per resolution), "
                            f"--channel {levels - 1}")
    return config


def lr_at(step, total_steps, base_lr, warmup=200, time_progress=0.0):
    """Linear warm-up, then cosine decay to 0 at the last step (or at --max-minutes, if sooner)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total_steps - warmup), time_progress))
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def train_epoch(model, optimizer, images, args, epoch, step, total_steps, device, clock):
    """One pass over `images`; clock() -> fraction of --max-minutes used (the epoch stops at 1)."""
    model.train()
    gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)   # shuffling and noise: resumable
    n_batches = len(images) // args.batch_size
    bar = tqdm(batches(images, images, args.batch_size, shuffle=True, generator=gen, drop_last=True),
               total=n_batches, desc=f"epoch {epoch + 1}/{args.epochs}", mininterval=1 if sys.stderr.isatty() else 30)
    total, count, skipped = 0.0, 0, 0
    for imgs, _ in bar:
        x, log_scale = preprocess(imgs, gen)
        x, log_scale = x.to(device), log_scale.to(device)
        used = clock()
        if used >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, args.lr, time_progress=used)
        loss = -model.log_probs(x).mean()
        if not torch.isfinite(loss):
            skipped += 1
            if skipped > 20:
                raise UserError("training diverged (20 non-finite losses); lower --lr")
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        optimizer.step()
        step += 1
        with torch.no_grad():   # training bits/dim of this batch (batch statistics)
            bpd = (loss.item() - (x.size(1) * log_scale.mean().item()
                                  - (torch.log(x) + torch.log1p(-x)).sum(1).mean().item())
                   + x.size(1) * math.log(256.)) / (x.size(1) * math.log(2.))
        total += bpd * x.size(0)
        count += x.size(0)
        bar.set_postfix(loss=f"{loss.item():.1f}", bpd=f"{bpd:.3f}", refresh=False)
    bar.close()
    return total / max(count, 1), step


def save_best(path, model, config, **extra):
    return save_checkpoint(path, KIND, config, model=model.state_dict(), **extra)


def finalize(model_path, config, train_images, test_images, device, args):
    """Recompute the best model's statistics over the whole training set, evaluate, ship fp16 if
    that leaves bits/dim unchanged. Returns the result dict."""
    model, ckpt = load_flow(model_path, device)
    recompute_batchnorm(model, train_images, generator=torch.Generator().manual_seed(EVAL_SEED))
    bpd32 = evaluate_bpd(model, test_images)
    state16 = half_state(model.state_dict())
    model16 = load_state(build_flow(config), state16).float().to(device).eval()
    bpd16 = evaluate_bpd(model16, test_images)
    use16 = abs(bpd16 - bpd32) <= FP16_TOLERANCE
    save_checkpoint(model_path, KIND, config, model=state16 if use16 else model.state_dict(),
                    epoch=ckpt.get("epoch"), test_bpd=bpd16 if use16 else bpd32,
                    bn_images=len(train_images), dtype="float16" if use16 else "float32")
    print(f"final: test bits/dim {bpd32:.4f} (fp32), {bpd16:.4f} (fp16) -> shipped "
          f"{'fp16' if use16 else 'fp32'} at {model_path}")
    return dict(test_bpd=bpd16 if use16 else bpd32, test_bpd_fp32=bpd32, dtype="float16" if use16 else "float32",
                epoch=ckpt.get("epoch"), size_mb=Path(model_path).stat().st_size / 2 ** 20)


def run_eval(args, device):
    model, ckpt = load_flow(args.load_path, device)
    test_images = load_mnist(train=False, data_root=args.data_root)[0][: args.limit]
    if args.recompute_bn:
        train_images = load_mnist(train=True, data_root=args.data_root)[0][: args.limit]
        recompute_batchnorm(model, train_images, generator=torch.Generator().manual_seed(EVAL_SEED))
    bpd = evaluate_bpd(model, test_images)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.load_path}: {ckpt['config']['arch']} flow, {n_params / 1e6:.2f}M parameters, "
          f"epoch {ckpt.get('epoch')}; test bits/dim {bpd:.4f} on {len(test_images)} test images")
    return bpd


def train(args, device):
    log_dir, model_path = Path(args.log_dir), Path(args.model_dir) / "realnvp.pt"
    last_path = log_dir / "last.pt"
    seed_everything(args.seed)
    config = model_config(args)
    train_images = load_mnist(train=True, data_root=args.data_root)[0][: args.limit]
    test_images = load_mnist(train=False, data_root=args.data_root)[0][: args.limit]
    if len(train_images) < args.batch_size:
        raise UserError(f"--batch-size {args.batch_size} is larger than the {len(train_images)} training images")
    model = build_flow(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-6)
    start_epoch, step, best, elapsed = 0, 0, float("inf"), 0.0
    log = CsvLog(log_dir / "log.csv")
    if args.resume:
        state = load_checkpoint(last_path, KIND)
        if state["config"] != config:
            raise UserError(f"{last_path} was trained with {state['config']}, not {config}; pass the same flags")
        load_state(model, state["model"], last_path)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, best, elapsed = state["epoch"], state["step"], state["best"], state["elapsed"]
        print(f"resumed from {last_path} at epoch {start_epoch} (best test bits/dim {best:.4f})")
    elif log.path.exists():
        log.path.unlink()   # a fresh run starts a fresh log
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{config['arch']} flow, {n_params / 1e6:.2f}M parameters, {len(train_images)} training images")
    total_steps = args.epochs * (len(train_images) // args.batch_size)
    noise = torch.randn(100, 784, generator=torch.Generator().manual_seed(args.seed))
    run_start, run_elapsed = time.time(), elapsed
    limit = args.max_minutes * 60 if args.max_minutes else None

    def clock():   # fraction of --max-minutes used, counting resumed time
        return 0.0 if limit is None else (run_elapsed + time.time() - run_start) / limit

    for epoch in range(start_epoch, args.epochs):
        if clock() >= 1.0:
            print(f"--max-minutes {args.max_minutes} reached before epoch {epoch + 1}")
            break
        t0 = time.time()
        train_bpd, step = train_epoch(model, optimizer, train_images, args, epoch, step, total_steps, device, clock)
        train_time = time.time() - t0
        recompute_batchnorm(model, train_images[: args.bn_images],
                            generator=torch.Generator().manual_seed(EVAL_SEED))
        test_bpd = evaluate_bpd(model, test_images)
        model.save_images(epoch + 1, args.img_save_dir, noise=noise.to(device))
        elapsed += time.time() - t0
        if test_bpd < best:
            best = test_bpd
            save_best(model_path, model, config, epoch=epoch + 1, test_bpd=test_bpd, bn_images=args.bn_images)
        save_checkpoint(last_path, KIND, config, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        epoch=epoch + 1, step=step, best=best, elapsed=elapsed)
        log.write(epoch=epoch + 1, step=step, train_bpd=round(train_bpd, 4), test_bpd=round(test_bpd, 4),
                  lr=optimizer.param_groups[0]["lr"], train_minutes=round(train_time / 60, 2),
                  total_minutes=round(elapsed / 60, 2))
        plot_curves(log.rows(), "epoch", {"bits/dim": ["train_bpd", "test_bpd"]}, log_dir / "curves.png")
        print(f"epoch {epoch + 1}: train bits/dim {train_bpd:.4f}, test bits/dim {test_bpd:.4f} "
              f"(best {best:.4f}), {elapsed / 60:.1f} min so far", flush=True)
    if not model_path.exists():
        raise UserError("no epoch finished with a finite test bits/dim; nothing to ship")
    result = finalize(model_path, config, train_images, test_images, device, args)
    result.update(train_minutes=round(elapsed / 60, 1), epochs=args.epochs, params=n_params, config=config)
    (log_dir / "result.json").write_text(json.dumps(result, indent=2))
    figures = Path(args.figures_dir)
    shipped, _ = load_flow(model_path, device)
    with torch.no_grad():
        samples = torch.sigmoid(shipped.sample(100, noise=noise.to(device))).view(-1, 1, 28, 28)
    save_image_grid(samples, figures / "realnvp_samples.png")
    plot_curves(log.rows(), "epoch", {"bits/dim": ["train_bpd", "test_bpd"]}, figures / "realnvp_curves.png",
                title="RealNVP on MNIST")
    return result


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    device = pick_device("cpu" if args.no_cuda else args.device)
    if args.eval:
        return run_eval(args, device)
    return train(args, device)


if __name__ == "__main__":
    main()
