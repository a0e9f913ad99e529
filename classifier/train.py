"""Train the scoring classifier: `python classifier/train.py` (the defaults are models/classifier.pt's recipe;
a complete run writes models/classifier.pt). `python classifier/train.py --test [--load_path P]` prints the
test accuracy of a checkpoint.

Recipe: random affine augmentation, label smoothing 0.05, AdamW (weight decay 5e-4) with torch's one-cycle
schedule (`one_cycle`); the last epoch's weights are shipped (fp16).
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.model import DEFAULT_PATH, KIND, ClassifierConfig, accuracy_on_test_set, augment, build, load
from mnistgen.data import batches, load_mnist
from mnistgen.training import Task, add_run_args, fit, run_options
from mnistgen.utils import (BATCH_SIZE_RANGE, LR_RANGE, SEED_RANGE, add_common_args, pick_device, run_cli,
                            seed_everything, shown)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=BATCH_SIZE_RANGE, default=128, help="mini-batch size (default: 128)")
    p.add_argument("--lr", type=LR_RANGE, default=3e-3,
                   help="peak learning rate of the one-cycle schedule (default: 3e-3)")
    p.add_argument("--width", type=ClassifierConfig.RANGES["width"], default=ClassifierConfig.width,
                   help=f"channels of the first conv layers (default: {ClassifierConfig.width})")
    p.add_argument("--seed", type=SEED_RANGE, default=0, help="random seed (default: 0)")
    add_run_args(p, logdir="runs/classifier", save_path="models/classifier.pt", epochs=8, figures=False)
    p.add_argument("--test", action="store_true", help="only print the test accuracy of --load_path")
    p.add_argument("--load_path", default=str(DEFAULT_PATH),
                   help=f"checkpoint for --test (default: {shown(DEFAULT_PATH)})")
    return add_common_args(p)


def one_cycle(step, total, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, momenta=(0.85, 0.95)):
    """(lr / peak lr, Adam beta1) at `step` of torch's OneCycleLR with its defaults: over the first 30% of
    the steps the lr rises from peak/25 to the peak while beta1 falls from 0.95 to 0.85 (cosine), then the
    lr anneals to peak/25e4 while beta1 returns to 0.95."""
    warm_end, start_lr = pct_start * total - 1, 1 / div_factor
    low, high = momenta
    if step <= warm_end:
        t, lrs, betas = step / warm_end, (start_lr, 1.0), (high, low)
    else:
        t, lrs, betas = (step - warm_end) / (total - 1 - warm_end), (1.0, start_lr / final_div_factor), (low, high)
    weight = (1 + math.cos(math.pi * t)) / 2  # 1 -> 0 along the phase
    return lrs[1] + (lrs[0] - lrs[1]) * weight, betas[1] + (betas[0] - betas[1]) * weight


class ClassifierTask(Task):
    """Cross-entropy on augmented batches; the test accuracy after every epoch (for the log: the last
    epoch is shipped, not the best on the test set)."""
    kind = KIND
    curve_panels = {"loss": ["loss"], "test accuracy": ["test_accuracy"]}

    def __init__(self, config, args, images, labels, device):
        self.config, self.device, self.data_root = config, device, args.data_root
        self.images, self.labels, self.batch_size = images, labels, args.batch_size
        self.model = build(config).to(device)
        self.modules = {"model": self.model}
        self.optimizers = {"adamw": torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=5e-4)}
        self.steps_per_epoch = -(-len(images) // args.batch_size)
        self.total_steps = args.num_epochs * self.steps_per_epoch

    def batches(self, epoch, generator):
        for x, y in batches(self.images, self.labels, self.batch_size, generator=generator):
            yield augment(x, generator), y

    def lr_scale(self, step):
        return one_cycle(step, self.total_steps)[0]

    def train_step(self, batch):
        x, y = (t.to(self.device) for t in batch)
        self.model.train()
        loss = F.cross_entropy(self.model(x), y, label_smoothing=0.05)
        opt = self.optimizers["adamw"]
        for group in opt.param_groups:  # the momentum half of the one-cycle schedule (the scaffold sets the lr)
            group["betas"] = (one_cycle(self.step, self.total_steps)[1], group["betas"][1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return dict(loss=loss.item())

    def evaluate(self, step, run_dir):
        return dict(test_accuracy=accuracy_on_test_set(self.model.eval(), self.data_root))


@run_cli
def main(argv=None):
    args = build_parser().parse_args(argv)
    device = pick_device(args.device)
    if args.test:
        model = load(args.load_path, device)
        print(f"test accuracy {100 * accuracy_on_test_set(model, args.data_root):.2f}% ({shown(args.load_path)})")
        return
    images, labels = load_mnist(train=True, data_root=args.data_root)
    seed_everything(args.seed)  # the initialisation draws from the global RNG
    task = ClassifierTask(ClassifierConfig(width=args.width), args, images[:args.limit], labels[:args.limit], device)
    start = time.time()
    path = fit(task, run_options(args, KIND, task.total_steps, task.steps_per_epoch))
    acc = accuracy_on_test_set(load(path), args.data_root)
    print(f"{shown(path)}: test accuracy {100 * acc:.2f}% (as saved, fp16) in {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
