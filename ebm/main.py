"""Train the MNIST energy-based model, or evaluate its inpainting (`--play --load_dir PATH`).

Training:   python ebm/main.py                      (IGEBM-style defaults, resumable with --resume)
Inpainting: python ebm/main.py --play --load_dir models/ebm.pt
Samples:    python ebm/main.py --samples 1000 --load_dir models/ebm.pt
"""
import argparse
import math
import sys
import time
from collections import deque
from pathlib import Path

import torch
from tqdm import tqdm

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ebm import INPAINT_DEFAULTS, MlpBackbone, Trainer, TrainingDiverged, row_corruption
from mnistgen.data import load_mnist
from mnistgen.utils import (MODELS_DIR, REPO_ROOT, CsvLog, UserError, add_common_args, nonnegative_float,
                            pick_device, plot_curves, positive_float, positive_int, probability, run_cli,
                            save_image_grid, seed_everything)

FIGURES_DIR = REPO_ROOT / "figures"
DEFAULT_LOGDIR = REPO_ROOT / "runs" / "ebm"
NOISE_STD = 0.3  # corruption of the even rows (assignment protocol)
MAX_ROLLBACKS = 3
# Sampler collapse: the negatives stop looking like data (the buffer fills with noise) and the energy gap
# E(x-) - E(x+), a few 1e-3 while sampling works, climbs to 0.1-0.3 within a few hundred steps and never comes
# back. The gap is averaged over this many steps; checkpoints are only written while it is below half the limit.
GAP_WINDOW = 100
# Langevin steps of an unconditional sample from noise: training negatives live in the replay buffer for
# ~1/(1 - replay_p) = 20 iterations of K = 20 steps, so chains of this order are what the model was shaped by.
SAMPLE_STEPS = 1000
# values tried by --tune, one setting at a time
TUNE_GRID = dict(steps=[30, 60, 100, 150, 250], step_size=[2.0, 5.0, 10.0, 20.0], noise_std=[0.0, 0.005, 0.01, 0.02],
                 grad_clip=[0.003, 0.01, 0.03, math.inf], fidelity=[0.0, 0.002, 0.005, 0.01, 0.02], chains=[1, 2, 4])


def optional_float(text):
    """A float > 0, or 'none' for no bound (the starter's default None)."""
    if text.lower() == "none":
        return None
    return positive_float(text)


def clip_float(text):
    """A float > 0, or 'none' (= inf: no clipping)."""
    return math.inf if text.lower() == "none" else positive_float(text)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["mnist"], default="mnist", help="data set (default: mnist)")
    p.add_argument("--seed", type=int, default=42, help="seed of training and of the evaluation noise (default: 42)")
    p.add_argument("--logdir", default=None,
                   help=f"folder of the training log, negatives grids and resumable checkpoint "
                        f"(default: {DEFAULT_LOGDIR.relative_to(REPO_ROOT)})")
    p.add_argument("--play", action="store_true", help="evaluate inpainting of --load_dir instead of training")
    p.add_argument("--load_dir", default=None, help="checkpoint file, or folder holding ebm.pt / ebm_train.pt")
    p.add_argument("--batch_size", type=positive_int, default=128, help="training batch size (default: 128)")
    p.add_argument("--buffer_size", type=positive_int, default=10000, help="replay buffer capacity (default: 10000)")
    p.add_argument("--langevin_k", type=positive_int, default=20, help="Langevin steps per negative (default: 20)")
    p.add_argument("--langevin_noise_std", type=nonnegative_float, default=0.005,
                   help="std of the Langevin noise per step (default: 0.005)")
    p.add_argument("--langevin_lr", type=positive_float, default=10.0, help="Langevin step size (default: 10)")
    p.add_argument("--replay_p", type=probability, default=0.95,
                   help="probability a negative restarts from the replay buffer, else U(0,1) noise (default: 0.95)")
    p.add_argument("--lr", type=positive_float, default=1e-4, help="Adam learning rate, betas (0, 0.999) (default: 1e-4)")
    p.add_argument("--l2_coef", type=nonnegative_float, default=1.0,
                   help="alpha of the regulariser alpha*(E(x+)^2 + E(x-)^2) (default: 1)")
    p.add_argument("--proj_norm", type=optional_float, default=0.01,
                   help="clip each pixel's Langevin gradient to [-proj_norm, proj_norm]; 'none' = no clip (default: 0.01)")
    p.add_argument("--num_epochs", type=positive_int, default=40,
                   help="training epochs (default: 40, about 30 min on a 2-core CPU)")
    p.add_argument("--inpaint_neg_p", type=probability, default=0.75,
                   help="fraction of negatives started from row-corrupted training images, Langevin on the "
                        "corrupted rows only (task-aware CD; 0 = plain IGEBM; default: 0.75)")
    # training extras
    p.add_argument("--resume", action="store_true", help="continue from LOGDIR/ebm_train.pt")
    p.add_argument("--max_minutes", type=positive_float, default=None,
                   help="stop (checkpointed, resumable) after this much wall time (default: no limit)")
    p.add_argument("--limit", type=positive_int, default=None, help="train on the first N training images only")
    p.add_argument("--val_images", type=positive_int, default=2000,
                   help="last N training images held out for validation/tuning (default: 2000)")
    p.add_argument("--eval_every", type=positive_int, default=500,
                   help="steps between validation inpainting checks on 500 held-out images (default: 500)")
    p.add_argument("--collapse_gap", type=positive_float, default=0.03,
                   help=f"sampler-collapse guard: when E(x-) - E(x+) averaged over {GAP_WINDOW} steps exceeds this, "
                        "roll back to the last checkpoint at half the learning rate (default: 0.03)")
    p.add_argument("--figures_dir", default=str(FIGURES_DIR),
                   help="training: where ebm_curves.png, ebm_val.png and ebm_negatives.png go (default: figures)")
    p.add_argument("--save_path", default=str(MODELS_DIR / "ebm.pt"),
                   help="shipped checkpoint written at the end of training: best validation weights, "
                        "no optimizer/buffer (default: models/ebm.pt)")
    # evaluation
    p.add_argument("--num_images", type=positive_int, default=None, help="--play: first N images only (default: all)")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="--play: MNIST test set, or the held-out training images used for tuning (default: test)")
    p.add_argument("--figure", default=None,
                   help="PNG written by --play (originals / corrupted / recovered; default: figures/ebm_inpainting.png) "
                        "or --samples (default: figures/ebm_samples.png)")
    for name, kind, text in [("steps", positive_int, "Langevin steps"), ("step_size", nonnegative_float, "step size"),
                             ("noise_std", nonnegative_float, "noise std"), ("chains", positive_int, "chains averaged"),
                             ("grad_clip", clip_float, "pixel-gradient clip ('none' = off)"),
                             ("fidelity", nonnegative_float, "pull towards the observed pixels per step")]:
        p.add_argument(f"--inpaint_{name}", type=kind, default=None,
                       help=f"inpainting {text} (default: the checkpoint's, else {INPAINT_DEFAULTS[name]})")
    p.add_argument("--export", default=None,
                   help="with --load_dir: write the shipped form of that checkpoint (weights, config with the "
                        "--inpaint_* settings) to this path")
    p.add_argument("--tune", action="store_true",
                   help="with --load_dir: coordinate search of the inpainting settings on --num_images (default 500) "
                        "held-out TRAINING images (never the test set); prints the best settings")
    p.add_argument("--tune_keys", default=",".join(TUNE_GRID),
                   help=f"--tune: settings to search, comma-separated (default: {','.join(TUNE_GRID)})")
    p.add_argument("--samples", type=positive_int, default=None,
                   help="with --load_dir: draw N unconditional samples, save figures/ebm_samples.png and print the "
                        "classifier's confidence on them and on noise")
    p.add_argument("--sample_steps", type=positive_int, default=SAMPLE_STEPS,
                   help=f"Langevin steps per sample (default: {SAMPLE_STEPS})")
    return add_common_args(p)


def make_trainer(args, device):
    model = MlpBackbone(input_shape=(1, 28, 28), hidden_size=512).to(device)
    trainer = Trainer(model, device, args.buffer_size, args.langevin_k, args.langevin_noise_std, args.langevin_lr,
                      args.replay_p, args.lr, args.l2_coef, args.proj_norm)
    trainer.inpaint_neg_p = args.inpaint_neg_p
    return trainer


def inpaint_overrides(args):
    """The --inpaint_* flags that were given."""
    return {k: getattr(args, f"inpaint_{k}") for k in INPAINT_DEFAULTS if getattr(args, f"inpaint_{k}") is not None}


# ---- evaluation protocol ----------------------------------------------------------------------
def corrupt(images, seed):
    """The assignment's corruption with a fixed noise seed: even rows + 0.3 * N(0, 1), clipped to [0, 1]."""
    return row_corruption(images, NOISE_STD, generator=torch.Generator().manual_seed(seed))


def row_interpolation(corrupted, mask):
    """Baseline: every corrupted row becomes the mean of its clean neighbours (row 0 copies row 1)."""
    padded = torch.cat([corrupted[..., 1:2, :], corrupted, corrupted[..., -1:, :]], dim=-2)  # (.., 30, 28)
    above, below = padded[..., :-2, :], padded[..., 2:, :]
    return torch.where(mask, (above + below) / 2, corrupted)


def per_image_mse(a, b):
    return ((a.float() - b.float()) ** 2).flatten(1).mean(1)


def mse_line(mse):
    return (f"mean mse {mse.mean().item():.6f} std {mse.std(unbiased=False).item():.6f} "
            f"max {mse.max().item():.6f} min {mse.min().item():.6f}")


def evaluate_inpainting(trainer, images, seed=42, batch_size=1000, progress=False, **overrides):
    """Corrupt `images` with the protocol's noise (fixed seed) and inpaint them in batches.

    Returns dict(recovered, corrupted, mask, mse (per image), mse_corrupted, mse_interpolation)."""
    corrupted, mask = corrupt(images, seed)
    generator = torch.Generator().manual_seed(seed + 1)  # Langevin noise
    recovered = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="inpainting", disable=not progress, leave=False):
        sl = slice(start, start + batch_size)
        recovered.append(trainer.inpainting(corrupted[sl], mask[sl], generator=generator, **overrides).cpu())
    recovered = torch.cat(recovered)
    return dict(recovered=recovered, corrupted=corrupted, mask=mask, mse=per_image_mse(images, recovered),
                mse_corrupted=per_image_mse(images, corrupted),
                mse_interpolation=per_image_mse(images, row_interpolation(corrupted, mask)))


def eval_images(split, data_root=None, val_images=2000):
    if split == "test":
        return load_mnist(train=False, data_root=data_root)[0]
    return load_mnist(train=True, data_root=data_root)[0][-val_images:]


def play(args, device):
    if args.load_dir is None:
        raise UserError("--play needs --load_dir PATH (a checkpoint file or the folder holding it)")
    trainer = Trainer.from_checkpoint(args.load_dir, device)
    images = eval_images(args.split, args.data_root, args.val_images)[:args.num_images]
    settings = {**trainer.inpaint_config, **inpaint_overrides(args)}
    print(f"inpainting {len(images)} {args.split} images: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    start = time.time()
    res = evaluate_inpainting(trainer, images, seed=args.seed, progress=True, **inpaint_overrides(args))
    print(mse_line(res["mse"]) + "  (recovered by the EBM)")
    print(mse_line(res["mse_corrupted"]) + "  (corrupted input)")
    print(mse_line(res["mse_interpolation"]) + "  (row interpolation baseline)")
    print(f"inpainting time {time.time() - start:.1f}s")
    n = min(10, len(images))
    grid = torch.cat([images[:n], res["corrupted"][:n], res["recovered"][:n]])
    print(f"figure: {save_image_grid(grid, args.figure or FIGURES_DIR / 'ebm_inpainting.png', nrow=n)}")
    return res


def export(args, device):
    trainer = Trainer.from_checkpoint(args.load_dir, device)
    trainer.inpaint_config.update(inpaint_overrides(args))
    trainer.save(args.export, full=False)
    print(f"wrote {args.export} (inpainting: {trainer.inpaint_config})")


def coordinate_search(trainer, images, grid, log=print):
    """Starting from the trainer's settings, try each value of one setting at a time, keep the best."""
    def mse(settings):
        return evaluate_inpainting(trainer, images, seed=0, **settings)["mse"].mean().item()

    best = dict(trainer.inpaint_config)
    best_mse = mse(best)
    log(f"start {best}: {best_mse:.6f}")
    for key, values in grid.items():
        for value in values:
            if value != best[key]:
                start = time.time()
                trial_mse = mse({**best, key: value})
                log(f"  {key}={value}: {trial_mse:.6f} ({time.time() - start:.1f}s)")
                if trial_mse < best_mse:
                    best, best_mse = {**best, key: value}, trial_mse
        log(f"best after {key}: {best}: {best_mse:.6f}")
    return best, best_mse


def tune(args, device):
    trainer = Trainer.from_checkpoint(args.load_dir, device)
    trainer.inpaint_config.update(inpaint_overrides(args))
    images = eval_images("val", args.data_root, args.val_images)[:args.num_images or 500]
    unknown = set(args.tune_keys.split(",")) - set(TUNE_GRID)
    if unknown:
        raise UserError(f"--tune_keys: unknown settings {sorted(unknown)}; choose from {','.join(TUNE_GRID)}")
    grid = {k: TUNE_GRID[k] for k in args.tune_keys.split(",")}
    best, mse = coordinate_search(trainer, images, grid, log=lambda s: print(s, flush=True))
    flags = " ".join(f"--inpaint_{k} {'none' if v == math.inf else v}" for k, v in best.items())
    print(f"best on {len(images)} held-out training images: mean MSE {mse:.6f}\n  {flags}")
    return best


def draw_samples(trainer, n, steps, seed=42):
    """n unconditional samples: Langevin chains of `steps` steps from U(0, 1) noise."""
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([trainer.sample(min(500, n - s), steps=steps, generator=gen).cpu() for s in range(0, n, 500)])


def sample_quality(images, device, data_root=None):
    """The project classifier's view of unconditional samples: mean max-softmax confidence, predicted-class
    counts, and the FID to the 10,000 test images in its feature space (no labels needed)."""
    from classifier.model import frechet_distance, gaussian_stats, get_scorer, predict
    scorer = get_scorer(device, data_root)
    probs, feats = predict(scorer.model, images)
    return dict(confidence=probs.max(1).values.mean().item(),
                counts=torch.bincount(probs.argmax(1), minlength=10).tolist(),
                fid=frechet_distance(gaussian_stats(feats), scorer.ref_all))


def sample_references(n, data_root=None, seed=42):
    """Two sets of n images to read sample scores against: real training digits, and U(0, 1) noise."""
    real = load_mnist(train=True, data_root=data_root)[0]
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n]
    return {"real training digits": real[pick],
            "uniform noise": torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed + 1))}


def samples(args, device):
    trainer = Trainer.from_checkpoint(args.load_dir, device)
    start = time.time()
    imgs = draw_samples(trainer, args.samples, args.sample_steps, args.seed)
    print(f"{len(imgs)} samples, {args.sample_steps} Langevin steps from U(0,1) noise, {time.time() - start:.1f}s")
    print(f"figure: {save_image_grid(imgs[:100], args.figure or FIGURES_DIR / 'ebm_samples.png', nrow=10)}")
    try:
        for name, x in {"EBM samples": imgs, **sample_references(len(imgs), args.data_root, args.seed)}.items():
            q = sample_quality(x, device, args.data_root)
            print(f"{name}: classifier confidence {q['confidence']:.3f}, FID to the test set {q['fid']:.2f} "
                  f"(classifier features), predicted class counts {q['counts']}")
    except UserError as err:
        print(f"no classifier scores: {err}")
    return imgs


# ---- training -----------------------------------------------------------------------------
def batch_stream(images, batch_size, seed, start_step, total):
    """(epoch, batch) from global step `start_step` on; an epoch's order depends on (seed, epoch)
    only, so a resumed run sees the batches the interrupted one would have seen."""
    steps_per_epoch = len(images) // batch_size
    step = start_step
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        gen = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(images), generator=gen)
        for i in range(offset, steps_per_epoch):
            yield epoch, images[order[i * batch_size:(i + 1) * batch_size]]
            step += 1
            if step >= total:
                return


def validation_mse(trainer, val_images):
    return evaluate_inpainting(trainer, val_images, seed=0, batch_size=500)["mse"].mean().item()


class SamplerCollapsed(TrainingDiverged):
    """The negatives stopped looking like data (see GAP_WINDOW); the weights themselves are finite."""


def ship_best(best_path, save_path, device):
    """Copy the best validation weights to the shipped checkpoint (weights and config only)."""
    if not Path(best_path).exists():
        return False
    Trainer.from_checkpoint(best_path, device).save(save_path, full=False)
    return True


def train(args, device):
    logdir = Path(args.logdir) if args.logdir else DEFAULT_LOGDIR
    logdir.mkdir(parents=True, exist_ok=True)
    ckpt_path, best_path = logdir / "ebm_train.pt", logdir / "ebm_best.pt"
    images = load_mnist(train=True, data_root=args.data_root)[0]
    if args.val_images >= len(images):
        raise UserError(f"--val_images {args.val_images} leaves no training images")
    val_images = images[-args.val_images:][:500]
    train_images = images[:-args.val_images][:args.limit]
    steps_per_epoch = len(train_images) // args.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"--batch_size {args.batch_size} is larger than the {len(train_images)} training images")
    trainer = make_trainer(args, device)
    step, best = 0, float("inf")
    if args.resume:
        ckpt = trainer.load(ckpt_path, evaluate=False)
        step, best = ckpt["step"], ckpt.get("best", float("inf"))
        trainer.lr = trainer.optimizer.param_groups[0]["lr"]  # lowered by earlier rollbacks
        seed_everything(args.seed + step)  # fresh Langevin noise after a resume, still reproducible
        print(f"resumed from {ckpt_path} at step {step} ({len(trainer.replay_buffer)} buffered negatives)")
    else:
        for stale in ("log.csv", "eval.csv"):
            (logdir / stale).unlink(missing_ok=True)
        trainer.save(ckpt_path, step=0, best=best)
    trainer.inpaint_config.update(inpaint_overrides(args))  # used for validation, stored in the checkpoints
    log, eval_log = CsvLog(logdir / "log.csv"), CsvLog(logdir / "eval.csv")
    total = args.num_epochs * steps_per_epoch
    deadline = time.time() + 60 * args.max_minutes if args.max_minutes else float("inf")
    rollbacks, start_time = 0, time.time()
    gaps = deque(maxlen=GAP_WINDOW)  # E(x-) - E(x+) of the last steps

    def mean_gap():
        return sum(gaps) / max(len(gaps), 1)

    bar = tqdm(total=total, initial=step, desc="ebm")
    stream = batch_stream(train_images, args.batch_size, args.seed, step, total)
    while step < total:
        epoch, x = next(stream)
        try:
            stats = trainer.train_step(x)
            gaps.append(stats["e_neg"] - stats["e_pos"])
            if len(gaps) == GAP_WINDOW and mean_gap() > args.collapse_gap:
                raise SamplerCollapsed(f"sampler collapsed (E(x-) - E(x+) averaged {mean_gap():.3f} "
                                       f"over {GAP_WINDOW} steps, limit {args.collapse_gap})")
        except TrainingDiverged as err:
            rollbacks += 1
            if rollbacks > MAX_ROLLBACKS:
                if isinstance(err, SamplerCollapsed):
                    # the weights are fine, the sampler just does not survive more training: stop here
                    tqdm.write(f"step {step}: {err} again after {MAX_ROLLBACKS} rollbacks; training stops early, "
                               f"the best weights before the collapse are kept")
                    break
                bar.close()
                ship_best(best_path, args.save_path, device)
                raise TrainingDiverged(f"{err} at step {step}; gave up after {MAX_ROLLBACKS} rollbacks. "
                                       f"The last good checkpoint is {ckpt_path}") from None
            step = trainer.load(ckpt_path, evaluate=False)["step"]  # roll back, go on at half the learning rate
            stream = batch_stream(train_images, args.batch_size, args.seed, step, total)
            trainer.lr /= 2
            for group in trainer.optimizer.param_groups:
                group["lr"] = trainer.lr
            gaps.clear()
            log.truncate("step", step)
            eval_log.truncate("step", step)
            bar.n = step
            tqdm.write(f"step {step}: {err}; rolled back to {ckpt_path}, Adam lr now {trainer.lr:g}")
            continue
        step += 1
        log.write(step=step, epoch=epoch, **{k: f"{v:.5g}" for k, v in stats.items()})
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.3f}", e_pos=f"{stats['e_pos']:.3f}", e_neg=f"{stats['e_neg']:.3f}")
        last = step >= total or time.time() >= deadline
        if step % args.eval_every == 0 or last:
            # the assignment asks to keep track of the negatives: one grid per check
            save_image_grid(trainer.x_neg[:64], logdir / f"negatives_{step:06d}.png", nrow=8)
            save_image_grid(trainer.x_neg[:64], logdir / "negatives.png", nrow=8)
            val = validation_mse(trainer, val_images)
            eval_log.write(step=step, val_mse=f"{val:.6f}", minutes=f"{(time.time() - start_time) / 60:.2f}")
            tqdm.write(f"step {step}: validation inpainting MSE {val:.5f}")
            if mean_gap() > args.collapse_gap / 2:
                tqdm.write(f"step {step}: energy gap rising, no checkpoint (the sampler may be collapsing)")
            else:
                if val < best:
                    best = val
                    trainer.save(best_path, full=False, step=step, val_mse=val)
                trainer.save(ckpt_path, step=step, best=best)
        if last:
            break
    bar.close()
    figures = Path(args.figures_dir)
    for folder, prefix in [(logdir, ""), (figures, "ebm_")]:
        plot_curves(log.rows(), "step", {"energy": ["e_pos", "e_neg"], "loss": ["loss"], "grad norm": ["grad_norm"]},
                    folder / f"{prefix}curves.png", title="EBM training (per step)")
        plot_curves(eval_log.rows(), "step", {"held-out inpainting MSE": ["val_mse"]}, folder / f"{prefix}val.png")
    if trainer.x_neg is not None:
        save_image_grid(trainer.x_neg[:64], figures / "ebm_negatives.png", nrow=8)
    if ship_best(best_path, args.save_path, device):
        print(f"shipped best validation weights (MSE {best:.5f}) to {args.save_path}")
    print(f"trained {step}/{total} steps in {(time.time() - start_time) / 60:.1f} min; last good state: {ckpt_path}")
    return trainer


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    device = pick_device(args.device)
    if args.play:
        return play(args, device)
    if args.tune:
        if args.load_dir is None:
            raise UserError("--tune needs --load_dir")
        return tune(args, device)
    if args.export:
        if args.load_dir is None:
            raise UserError("--export needs --load_dir")
        return export(args, device)
    if args.samples:
        if args.load_dir is None:
            raise UserError("--samples needs --load_dir")
        return samples(args, device)
    return train(args, device)


def report(device="cpu", data_root=None):
    """Main-job rows for models/ebm.pt: inpainting MSE on the full test set (vs the corrupted input and
    the row-interpolation baseline); the classifier's confidence and FID on 1,000 unconditional samples,
    next to 1,000 real training digits and 1,000 noise images."""
    trainer = Trainer.from_checkpoint(MODELS_DIR / "ebm.pt", device)
    res = evaluate_inpainting(trainer, load_mnist(train=False, data_root=data_root)[0], seed=42)
    rows = [("EBM inpainting MSE (10k test images)", f"{res['mse'].mean().item():.4f}", "< 0.0058 (aim 0.0030)"),
            ("EBM corrupted-input MSE", f"{res['mse_corrupted'].mean().item():.4f}", "about 0.023"),
            ("EBM row-interpolation baseline MSE", f"{res['mse_interpolation'].mean().item():.4f}",
             "EBM must be below")]
    try:
        quality = {name: sample_quality(x, device, data_root) for name, x in
                   {"EBM": draw_samples(trainer, 1000, SAMPLE_STEPS), **sample_references(1000, data_root)}.items()}
    except UserError:
        return rows  # no classifier yet
    real, noise = quality["real training digits"], quality["uniform noise"]
    rows += [(f"EBM samples ({SAMPLE_STEPS} Langevin steps, 1,000): classifier confidence",
              f"{quality['EBM']['confidence']:.3f}", f"noise {noise['confidence']:.3f}, real {real['confidence']:.3f}"),
             ("EBM samples: FID to the test set (classifier features)", f"{quality['EBM']['fid']:.2f}",
              f"noise {noise['fid']:.2f}, 1,000 real {real['fid']:.2f}")]
    return rows


if __name__ == "__main__":
    main()
