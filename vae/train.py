"""Training of the CVAE through the project's scaffold (mnistgen.training).

    python vae/train.py [flags]    # the same as `python vae/vae.py [flags]` (the starter's command), without --eval

Per step: the negative ELBO with a linear KL warm-up, Adam at a cosine-decayed learning rate. Per epoch:
the test-set statistics, a 10x10 grid (run folder grids/), and, when the classifier is shipped, a check
of 100 samples per class whose fp16 weights are kept as a snapshot (run folder snapshots/). At the end
(`finalize`) the finalists, the best-checked epochs and the last, are re-scored on exactly the 10,000
samples of `--eval` and the winner is shipped.
"""
import math
import sys
from pathlib import Path

import torch

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.checkpoint import half_state, load_checkpoint, load_state, save_checkpoint
from mnistgen.data import batches, load_mnist
from mnistgen.training import Task, TrainingDiverged, check_outputs, fit, run_options
from mnistgen.utils import CsvLog, pick_device, run_cli, save_image_grid, seed_everything
from vae.evaluate import (CHECK_SEED, CURVE_PANELS, readme_figures, sample_check, starter_samples,
                          test_statistics, try_scorer)
from vae.vae import (DEFAULT_LOGDIR, IMG_SIZE, KIND, LABEL_SIZE, LATENT_SIZE, VAEConfig, add_train_args, build,
                     negative_elbo, new_parser, one_hot)

MIN_LR_SCALE = 0.05  # the cosine schedule ends at 5% of the peak rate: the last epochs average out gradient noise


def kl_weight_at(epoch_float, warmup_epochs):
    """Linear KL warm-up (Bowman et al., 2016; Sonderby et al., 2016): 0 -> 1 over `warmup_epochs`."""
    return 1.0 if warmup_epochs <= 0 else min(1.0, epoch_float / warmup_epochs)


class VAETask(Task):
    kind = KIND
    curve_panels = CURVE_PANELS

    def __init__(self, config, args, train_data, test_data, scorer, device):
        self.config, self.args, self.device, self.scorer = config, args, device, scorer
        self.train_x, self.train_y = train_data
        self.test_x, self.test_y = test_data
        self.model = build(config).to(device)
        torch.nn.init.constant_(self.model.recon_logstd, args.recon_logstd_init)
        self.modules = {"model": self.model}
        self.optimizers = {"model": torch.optim.Adam(self.model.parameters(), lr=args.lr)}
        self.steps_per_epoch = math.ceil(len(self.train_x) / args.batch_size)
        self.total_steps = args.num_epochs * self.steps_per_epoch
        self.kl_weight = 0.0
        self.grid_latent = torch.randn(100, config.latent_size, generator=torch.Generator().manual_seed(0)).to(device)
        self.grid_label = one_hot(torch.arange(10).repeat(10), device)  # row-major 10x10: column c = class c

    def batches(self, epoch, generator):
        return batches(self.train_x, self.train_y, self.args.batch_size, generator=generator)

    def lr_scale(self, step):
        """Cosine decay from the peak to MIN_LR_SCALE. The KL warm-up follows the same clock: the scaffold
        calls this hook with the step about to be taken, `train_step` does not get it."""
        self.kl_weight = kl_weight_at(step / self.steps_per_epoch, self.args.kl_warmup)
        progress = min(step, self.total_steps) / self.total_steps
        return MIN_LR_SCALE + (1 - MIN_LR_SCALE) * 0.5 * (1 + math.cos(math.pi * progress))

    # homework: the training step (negative ELBO, Adam)
    def train_step(self, batch):
        x, y = batch
        self.model.train()
        loss, stats = negative_elbo(self.model, x.to(self.device), one_hot(y, self.device), kl_weight=self.kl_weight)
        if not math.isfinite(stats["nelbo"]):
            raise TrainingDiverged("non-finite negative ELBO")
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return dict(train_nelbo=stats["nelbo"], train_kl=stats["kl"], train_recon=stats["recon"])

    def evaluate(self, step, run_dir):
        epoch = math.ceil(step / self.steps_per_epoch)
        # own generators for every draw of the evaluation: an extra one (a --max_minutes stop) leaves the
        # training's random stream as it was, so a resumed run stays bit-identical to an uninterrupted one
        noise = torch.Generator().manual_seed(CHECK_SEED)
        test = test_statistics(self.model, self.test_x, self.test_y, self.device, noise)
        metrics = {f"test_{k}": v for k, v in test.items() if k != "active_units"}
        metrics.update(active_units=test["active_units"], recon_logstd=self.model.recon_logstd.item())
        if self.scorer is not None:
            metrics["check_acc"], metrics["check_class_fid"] = sample_check(
                self.model, self.scorer, self.args.check_per_class, self.device)
            save_checkpoint(snapshot_path(run_dir, step), KIND, self.config,
                            model=half_state(self.model.state_dict()), epoch=epoch, step=step)
        save_image_grid(self.model.sample(self.grid_latent, self.grid_label),
                        run_dir / "grids" / f"epoch_{epoch:03d}.png")
        return metrics

    def finalize(self, best_path, run_dir):
        """The weights to ship: the last evaluation's when there are no checks, else the winner of the finalists
        (`--finalists` evaluations with the lowest check per-class FID, plus the last one), each re-scored on
        exactly what --eval produces (10,000 samples, seed --seed, fp16 weights, the model's temperature): the
        lowest per-class FID among those with accuracy >= --min_accuracy, or, when none qualifies, the most
        accurate."""
        rows = [r for r in CsvLog(run_dir / "log.csv").rows() if r.get("check_class_fid")]
        if self.scorer is None or not rows:
            ckpt = load_checkpoint(best_path, KIND)
            return dict(model=ckpt["model"], epoch=math.ceil(ckpt["step"] / self.steps_per_epoch))
        ranked = sorted(rows, key=lambda r: float(r["check_class_fid"]))[:self.args.finalists]
        finalists = sorted({int(r["step"]) for r in ranked} | {int(rows[-1]["step"])})
        scores = {step: self.score_snapshot(snapshot_path(run_dir, step)) for step in finalists}
        eligible = [s for s in finalists if scores[s][0] >= self.args.min_accuracy]
        chosen = min(eligible, key=lambda s: scores[s][1]) if eligible else max(finalists, key=lambda s: scores[s][0])
        ckpt = load_checkpoint(snapshot_path(run_dir, chosen), KIND)
        print(f"ships epoch {ckpt['epoch']}")
        return dict(model=ckpt["model"], epoch=ckpt["epoch"])

    def score_snapshot(self, path):
        """(accuracy, per-class FID) of the 10,000 samples of --eval from a snapshot's fp16 weights."""
        ckpt = load_checkpoint(path, KIND)
        load_state(self.model, ckpt["model"], path)
        samples = starter_samples(self.model, self.device, self.args.seed)
        score = self.scorer.score(samples["imgs"], samples["labels"])
        print(f"finalist epoch {ckpt['epoch']} (step {ckpt['step']}, temperature {self.model.temperature}): 10,000 "
              f"samples: accuracy {100 * score['accuracy']:.2f}%  per-class FID {score['class_fid']:.3f}", flush=True)
        return score["accuracy"], score["class_fid"]

    def write_figures(self, shipped_path, run_dir, figures_dir):
        readme_figures(shipped_path, run_dir, figures_dir, self.device, self.args.data_root, self.args.seed)


def snapshot_path(run_dir, step):
    return run_dir / "snapshots" / f"step_{step:07d}.pt"


def train(args, device):
    # every output location is checked before the data, the classifier and the model are loaded
    check_outputs(args.save_path, args.figures_dir, args.logdir or DEFAULT_LOGDIR)
    config = VAEConfig(IMG_SIZE, LABEL_SIZE, LATENT_SIZE, temperature=args.temperature)
    train_data = [t[:args.limit] for t in load_mnist(train=True, data_root=args.data_root)]
    test_data = [t[:args.limit] for t in load_mnist(train=False, data_root=args.data_root)]
    steps_per_epoch = math.ceil(len(train_data[0]) / args.batch_size)
    opts = run_options(args, KIND, args.num_epochs * steps_per_epoch, eval_every=steps_per_epoch)
    scorer = try_scorer(device, args.data_root) if args.check_per_class else None
    if scorer is None:
        print("per-epoch sample checks off (no classifier checkpoint, or --check_per_class 0): the last epoch ships")
    seed_everything(args.seed)  # the initial weights (a resumed run reloads its own state and RNGs)
    task = VAETask(config, args, train_data, test_data, scorer, device)
    return fit(task, opts)


@run_cli
def main(argv=None):
    args = add_train_args(new_parser(__doc__)).parse_args(argv)
    return train(args, pick_device(args.device))


if __name__ == "__main__":
    main()
