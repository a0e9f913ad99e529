"""Train the scoring classifier: `python classifier/train.py` (defaults reproduce models/classifier.pt).

`python classifier/train.py --test [--load_path P]` prints the test accuracy of a checkpoint.
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.model import DEFAULT_PATH, KIND, MnistClassifier, augment, load_classifier, predict
from mnistgen.checkpoint import half_state, save_checkpoint
from mnistgen.data import batches, load_mnist
from mnistgen.utils import add_common_args, pick_device, positive_float, positive_int, run_cli, seed_everything


def parse_args(argv=None):
    p = add_common_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--epochs", type=positive_int, default=8, help="training epochs (default: 8)")
    p.add_argument("--batch_size", type=positive_int, default=128, help="mini-batch size (default: 128)")
    p.add_argument("--lr", type=positive_float, default=3e-3, help="peak learning rate of the one-cycle schedule (default: 3e-3)")
    p.add_argument("--width", type=positive_int, default=32, help="channels of the first conv layers (default: 32)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--save_path", default=str(DEFAULT_PATH), help="where to write the checkpoint (default: models/classifier.pt)")
    p.add_argument("--limit", type=positive_int, default=None, help="train on the first N images only (smoke tests)")
    p.add_argument("--test", action="store_true", help="only print the test accuracy of --load_path")
    p.add_argument("--load_path", default=str(DEFAULT_PATH), help="checkpoint for --test (default: models/classifier.pt)")
    return p.parse_args(argv)


def test_accuracy(model, data_root=None):
    images, labels = load_mnist(train=False, data_root=data_root)
    probs, _ = predict(model, images)
    return (probs.argmax(1) == labels).float().mean().item()


def train(args, device):
    images, labels = load_mnist(train=True, data_root=args.data_root)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    model = MnistClassifier(width=args.width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps_per_epoch = -(-len(images) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        model.train()
        bar = tqdm(batches(images, labels, args.batch_size, generator=g), total=steps_per_epoch,
                   desc=f"epoch {epoch}/{args.epochs}", leave=False)
        for x, y in bar:
            x, y = augment(x, g).to(device), y.to(device)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
        print(f"epoch {epoch}: test accuracy {100 * test_accuracy(model, args.data_root):.2f}%")
    return model


@run_cli
def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    if args.test:
        model = load_classifier(args.load_path, device)
        print(f"test accuracy {100 * test_accuracy(model, args.data_root):.2f}% ({args.load_path})")
        return
    seed_everything(args.seed)
    start = time.time()
    model = train(args, device).cpu()
    save_checkpoint(args.save_path, KIND, model.config, model=half_state(model.state_dict()))
    acc = test_accuracy(load_classifier(args.save_path), args.data_root)
    print(f"saved {args.save_path}: test accuracy {100 * acc:.2f}% (as saved, fp16) in {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
