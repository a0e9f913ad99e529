"""How long the project's everyday commands take here: one table of wall-clock seconds.

Runs, one after another in child processes (so each pays its own imports, as a user's command does):
- the main job twice, against an empty statistics cache (a fresh machine) and then against what that run cached;
- the graders' VAE and GAN evaluations (their samples are the main job's, so their scores are cached too);
- the classifier scoring a samples file it has never seen (10,000 training images in a new random order);
- the fast tests and the whole test suite (with the developer's own cache, as `python -m pytest` runs them);
then, in this process, the training scaffold's overhead: steps per second of `fit` over the VAE's task against a
bare loop over the same model, batches and optimizer (alternated, best of --repeats each, one thread).

    python benchmarks/speed.py                       # everything (about 5 minutes here)
    python benchmarks/speed.py --skip tests          # without the two test-suite rows

Time it on a quiet machine: another process on a 2-core CPU doubles every row.
"""
import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

if not __package__:  # run as a script: make the repository's packages importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnistgen.paths import MODELS_DIR, REPO_ROOT
from mnistgen.utils import positive_int, run_cli

GROUPS = ("report", "eval", "tests", "scaffold")


def commands(workdir):
    """(group, label, argv, cwd, cache) of every timed command: cache "empty" and "run" are a scratch cache folder
    (emptied before the first row), None the user's own; the graders' commands write into `workdir`."""
    python, models = sys.executable, MODELS_DIR
    return [
        ("report", "python -m report (statistics cache empty)", [python, "-m", "report"], REPO_ROOT, "empty"),
        ("report", "python -m report", [python, "-m", "report"], REPO_ROOT, "run"),
        ("eval", "python vae/vae.py --eval", [python, REPO_ROOT / "vae/vae.py", "--eval", "--load_path",
                                               models / "vae.pt"], workdir, "run"),
        ("eval", "python gan/gan.py --eval", [python, REPO_ROOT / "gan/gan.py", "--eval", "--load_path",
                                               models / "gan.pt"], workdir, "run"),
        ("eval", "python classifier/evaluate.py SAMPLES.pt (10,000 images never scored before)",
         [python, REPO_ROOT / "classifier/evaluate.py", workdir / "unseen_samples.pt"], workdir, "run"),
        ("tests", 'python -m pytest -q -m "not slow"', [python, "-m", "pytest", "-q", "-m", "not slow"], REPO_ROOT, None),
        ("tests", "python -m pytest -q", [python, "-m", "pytest", "-q"], REPO_ROOT, None),
    ]


def write_unseen_samples(path):
    """10,000 training digits with their labels, in an order drawn afresh: a samples file no cache has seen."""
    from mnistgen.data import load_mnist
    images, labels = load_mnist(train=True)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(time.time_ns()))[:10000]
    torch.save(dict(imgs=images[pick], labels=labels[pick]), path)


def timed(argv, cwd, env):
    start = time.perf_counter()
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
        return seconds, f"exit {proc.returncode}: {tail[0][:80]}"
    return seconds, ""


# ---------------------------------------------------------------------------------------------- scaffold
def vae_task(steps, batch_size):
    """The VAE's training task on the first steps * batch_size training images, its evaluation switched off
    (the comparison is about the loop's bookkeeping, not about what a model evaluates)."""
    from mnistgen.data import load_mnist
    from vae.train import VAETask
    from vae.vae import IMG_SIZE, LABEL_SIZE, LATENT_SIZE, VAEConfig, add_train_args, new_parser

    class Task(VAETask):
        def evaluate(self, step, run_dir):
            return {}

    args = add_train_args(new_parser("")).parse_args(["--batch_size", str(batch_size), "--check_per_class", "0"])
    n = steps * batch_size
    train = [t[:n] for t in load_mnist(train=True)]
    torch.manual_seed(0)
    return Task(VAEConfig(IMG_SIZE, LABEL_SIZE, LATENT_SIZE, temperature=args.temperature), args, train, train,
                None, "cpu")


def bare_loop_seconds(steps, batch_size):
    task = vae_task(steps, batch_size)
    start = time.perf_counter()
    for i, batch in enumerate(task.batches(0, torch.Generator().manual_seed(0))):
        task.lr_scale(i)
        task.train_step(batch)
    return time.perf_counter() - start


def fit_seconds(steps, batch_size):
    from mnistgen.training import RunOptions, fit
    task = vae_task(steps, batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        opts = RunOptions(logdir=Path(tmp) / "run", total_steps=steps, eval_every=steps, progress=True,
                          complete_run=False)
        start = time.perf_counter()
        with open(os.devnull, "w") as sink:
            stdout, sys.stdout = sys.stdout, sink
            try:
                fit(task, opts)
            finally:
                sys.stdout = stdout
        return time.perf_counter() - start


def scaffold_row(steps, batch_size, repeats):
    """Steps/s of fit, of the bare loop and their ratio, alternating the two `repeats` times (best of each)."""
    bare, scaffold = math.inf, math.inf
    for _ in range(repeats):
        bare = min(bare, bare_loop_seconds(steps, batch_size))
        scaffold = min(scaffold, fit_seconds(steps, batch_size))
    return steps / scaffold, steps / bare


@run_cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip", nargs="+", choices=GROUPS, default=[], help="leave out these groups of rows")
    p.add_argument("--steps", type=positive_int, default=469,
                   help="training steps per scaffold measurement (default: 469, one epoch of MNIST at batch 128)")
    p.add_argument("--repeats", type=positive_int, default=3, help="scaffold measurements of each kind")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        write_unseen_samples(work / "unseen_samples.pt")
        for group, label, argv_, cwd, cache in commands(work):
            if group in args.skip:
                continue
            env = dict(os.environ)
            if cache is not None:
                env["MNISTGEN_CACHE"] = str(work / "cache")
            seconds, note = timed(argv_, cwd, env)
            rows.append((label, f"{seconds:.1f} s", note))
            print(f"{label}: {seconds:.1f} s {note}", flush=True)
    if "scaffold" not in args.skip:
        torch.set_num_threads(1)
        fit_rate, bare_rate = scaffold_row(args.steps, 128, args.repeats)
        rows.append((f"training scaffold: fit {fit_rate:.1f} steps/s, bare loop {bare_rate:.1f} steps/s "
                     f"(VAE, batch 128, {args.steps} steps, 1 thread)", f"ratio {fit_rate / bare_rate:.3f}", ""))
    print("\n| command | wall time | |\n| --- | --- | --- |")
    for label, value, note in rows:
        print(f"| `{label}` | {value} | {note} |" if "scaffold" not in label else f"| {label} | {value} | |")


if __name__ == "__main__":
    main()
