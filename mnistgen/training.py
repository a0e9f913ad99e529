"""The one training scaffold: every model's loop, run folder, log, resume, keep-the-best and shipping.

A model supplies a `Task` (its data, its step, its evaluation, its schedule); `fit(task, options)` does
the bookkeeping the way nanoGPT's train.py does it, once for the whole project:

- run folder `options.logdir`: `log.csv` (one row per evaluation: the mean training stats since the
  last one, the task's metrics, lr, minutes), `curves.png`, `last.pt` (everything `--resume` needs:
  modules, optimizers, the task's extra state, RNG states, step, best-so-far, lr scale) and `best.pt`
  (the shipped form of the best evaluation so far, by the task's `rank`).
- resume: `last.pt` is reloaded and the log trimmed to its step, so a resumed run writes the rows an
  uninterrupted run would; batches come from (seed, epoch) so the data order is the same too. last.pt records
  the flags the run started with, and `--resume` refuses other values, except RESUME_MAY_CHANGE and a longer
  `--num_epochs`. A `--max_minutes` stop between evaluations logs a row of its own and keeps the training
  statistics of the open window in last.pt: the resumed run drops that row and logs the window's row whole.
- one run per run folder: a second run in the same folder fails at once, naming the process that holds it
  (`hold_run_folder`); SIGINT and SIGTERM end a run with one line saying from which step `--resume` continues.
- divergence: a step may raise `TrainingDiverged`; the run rolls back to `last.pt` at half the learning
  rate, at most `max_rollbacks` times (then it stops: `StopEarly` keeps the best, others re-raise).
- shipping: at the end `task.finalize` turns `best.pt` into the shipped checkpoint, written to
  `options.save_path` when the user gave one, or to the model's default in models/ after a complete run
  of the bare command; never after a short (smoke) run.
"""
import dataclasses
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mnistgen.checkpoint import CheckpointError, half_state, load_checkpoint, load_state, save_checkpoint
from mnistgen.files import ensure_writable, ensure_writable_dir
from mnistgen.errors import Interrupted, UserError
from mnistgen.paths import FIGURES_DIR, MODELS_DIR, RUNS_DIR, shown
from mnistgen.utils import EPOCHS_RANGE, CsvLog, flag_names, plot_curves, positive_float, positive_int

try:
    import fcntl  # POSIX; without it (Windows) run folders are not locked
except ImportError:
    fcntl = None

# The flags a resumed run may change: how long it runs, where it runs, where it reads MNIST and writes its outputs,
# and the flags of the scripts' evaluation modes, which a training ignores. A longer --num_epochs (--epochs) is
# allowed too; every other flag must be what the run started with.
RESUME_MAY_CHANGE = ("resume", "max_minutes", "device", "data_root", "logdir", "save_path", "model_dir",
                     "figures_dir", "img_save_dir", "eval", "test", "play", "load_path", "load_dir", "grid_path",
                     "figure", "num_images", "recompute_bn")
EPOCH_FLAGS = ("num_epochs", "epochs")
LOCK_FILE = ".lock"


class TrainingDiverged(UserError):
    """The step's energies/losses blew up: the weights must not be kept. The run rolls back."""


class StopEarly(TrainingDiverged):
    """Like TrainingDiverged, but when rollbacks do not help the run ends normally, shipping its best."""


@dataclasses.dataclass
class RunOptions:
    """What every training command shares (the flags `add_run_args` defines)."""
    logdir: Path
    total_steps: int
    eval_every: int                 # steps between evaluations (an epoch for the epoch-based models)
    seed: int = 0
    resume: bool = False
    save_path: Path = None          # the user's --save_path (None: the default below, complete runs only)
    default_save_path: Path = None  # models/<model>.pt
    complete_run: bool = True       # False for smoke runs (--limit): never ships to the default path
    max_minutes: float = None
    max_rollbacks: int = 3
    progress: bool = True
    figures_dir: Path = None          # the user's --figures_dir (None: the default below, complete runs only)
    default_figures_dir: Path = None  # figures/ of the repository
    save_flag: str = "--save_path"    # how the script spells the flag of save_path (for messages)
    flags: dict = None                # the parsed flags ({dest: value}), recorded in last.pt for --resume


def add_run_args(parser, logdir, save_path, epochs=None, figures=True, dashed_aliases=False):
    """The training flags every model's script shares; `epochs` is the model's default --num_epochs;
    figures=False for a model without README figures (no --figures_dir); dashed_aliases=True also accepts
    each flag spelled with dashes (--save-path)."""
    def add(name, **kwargs):
        parser.add_argument(*flag_names(name, dashed_aliases), **kwargs)
    if epochs is not None:
        add("--num_epochs", type=EPOCHS_RANGE, default=epochs, help=f"training epochs (default: {epochs})")
    add("--logdir", default=None,
        help=f"run folder: log.csv, curves.png, grids, last.pt (for --resume), best.pt (default: {logdir})")
    add("--resume", action="store_true", help="continue the run in --logdir from its last.pt")
    add("--save_path", default=None,
        help=f"where the shipped checkpoint goes (default: {save_path}, written only by a complete "
             "run: not with --limit or a --max_minutes stop)")
    add("--limit", type=positive_int, default=None,
        help="train on the first N training images only (smoke runs; never ships)")
    add("--max_minutes", type=positive_float, default=None,
        help="stop (resumable) after this many minutes of training (default: no limit)")
    if figures:
        add("--figures_dir", default=None,
            help="where the README figures of the shipped model go (default: figures/, written only by a complete run)")
    return parser


def run_options(args, name, total_steps, eval_every, **extra):
    """RunOptions from the flags of `add_run_args` for the model `name` (runs/NAME, models/NAME.pt)."""
    return RunOptions(logdir=Path(args.logdir or RUNS_DIR / name), total_steps=total_steps,
                      eval_every=eval_every, seed=args.seed, resume=args.resume,
                      save_path=args.save_path and Path(args.save_path), default_save_path=MODELS_DIR / f"{name}.pt",
                      complete_run=args.limit is None, max_minutes=args.max_minutes,
                      figures_dir=getattr(args, "figures_dir", None) and Path(args.figures_dir),
                      default_figures_dir=FIGURES_DIR, flags=dict(vars(args)), **extra)


def check_outputs(save_path, figures_dir, logdir, flags=("--save_path", "--figures_dir", "--logdir")):
    """Fail in one line, before any work, when an output location of a run cannot be written. `flags` names
    them as the script spells them."""
    if save_path is not None:
        ensure_writable(save_path, flags[0])
    if figures_dir is not None:
        ensure_writable_dir(figures_dir, flags[1])
    ensure_writable_dir(logdir, f"run folder ({flags[2]})")
    hold_run_folder(logdir, flags[2])


_HELD = {}  # run folder -> the open lock file through which this process holds it


def hold_run_folder(folder, flag="--logdir"):
    """Make this process the only run writing into `folder` until it ends or calls `release_run_folder`: an
    exclusive flock on folder/.lock, which holds the holder's pid. A folder held by another live process is a
    one-line UserError naming it; the lock of a process that died went with it (the kernel releases it), so the
    next run takes the folder over."""
    folder = Path(folder).resolve()
    if fcntl is None or folder in _HELD:
        return
    lock = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise UserError(f"run folder {shown(folder)} is in use by another run (process {holder}); wait for it to "
                        f"end or pass another {flag}") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    _HELD[folder] = lock


def release_run_folder(folder):
    lock = _HELD.pop(Path(folder).resolve(), None)
    if lock is not None:
        lock.close()  # closing the file releases the flock


class Task:
    """What a model supplies to `fit`. Subclasses set the attributes in __init__ and override the hooks."""
    kind = None               # checkpoint kind
    config = None             # the model's config dataclass (stored in every checkpoint)
    modules = {}              # name -> nn.Module, saved in last.pt
    optimizers = {}           # name -> optimizer, saved in last.pt
    curve_panels = {}         # curves.png: {panel title: [log columns]}
    steps_per_epoch = 1
    step = 0                  # set by fit before each train_step

    def batches(self, epoch, generator):
        """The batches of one epoch, in an order drawn from `generator` (seeded by (seed, epoch))."""
        raise NotImplementedError

    def train_step(self, batch):
        """One optimisation step; returns {name: float} for the log."""
        raise NotImplementedError

    def lr_scale(self, step):
        """Learning-rate multiplier at `step` (the schedule); the optimizers' initial lr is the peak."""
        return 1.0

    def evaluate(self, step, run_dir):
        """{metric: float} of the current weights (may also write grids into run_dir)."""
        return {}

    def rank(self, metrics):
        """Lower is better: the keep-the-best key of an evaluation; None: never 'best' (keep the last)."""
        return None

    def healthy(self):
        """False while the state should not be checkpointed (e.g. a sampler about to collapse)."""
        return True

    def shipped_state(self):
        """The shipped checkpoint's tensors: the modules' weights in fp16, no optimizer state."""
        return {name: half_state(m.state_dict()) for name, m in self.modules.items()}

    def extra_state(self):
        return {}

    def load_extra_state(self, state):
        pass

    def write_figures(self, shipped_path, run_dir, figures_dir):
        """README figures of the shipped model (called only when the run may write into `figures_dir`)."""

    def finalize(self, best_path, run_dir):
        """Turn best.pt into the shipped checkpoint's tensors (default: best.pt as it is)."""
        ckpt = load_checkpoint(best_path, self.kind)
        return {k: v for k, v in ckpt.items() if k not in ("kind", "config", "format")}


# ---------------------------------------------------------------------------------------------- RNG

def rng_state():
    np_state = np.random.get_state()
    return dict(torch=torch.get_rng_state(), python=list(random.getstate()[1]),
                numpy=torch.from_numpy(np_state[1].astype(np.int64)), numpy_pos=int(np_state[2]))


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"]))


# ---------------------------------------------------------------------------------------------- the loop

class Run:
    """The run folder of one training run."""

    def __init__(self, task, opts):
        self.task, self.opts = task, opts
        self.dir = Path(opts.logdir)  # checked (and cleaned of stale temporaries) by `check_outputs`
        self.last, self.best_path = self.dir / "last.pt", self.dir / "best.pt"
        self.log = CsvLog(self.dir / "log.csv")
        self.step, self.best, self.lr_factor, self.minutes = 0, None, 1.0, 0.0
        self.lr_scale = 1.0  # the multiplier of the last step, for the log
        self.sums, self.count = {}, 0  # training statistics of the open evaluation window (summed) and its steps
        self.saved_step = None         # the step of last.pt, where --resume continues
        self.base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in task.optimizers.items()}

    # ---- state
    def save_last(self, pending=None):
        """last.pt: everything --resume needs. `pending`: a stop inside an evaluation window, {sums, count} of the
        window so far and whether best.pt is provisional (written by the stop because there was none)."""
        t = self.task
        save_checkpoint(self.last, t.kind, t.config, step=self.step, best=self.best, lr_factor=self.lr_factor,
                        minutes=self.minutes, rng=rng_state(), extra=t.extra_state(),
                        modules={n: m.state_dict() for n, m in t.modules.items()},
                        optimizers={n: o.state_dict() for n, o in t.optimizers.items()},
                        flags=self.opts.flags, pending=pending)
        self.saved_step = self.step

    def check_flags(self, recorded):
        """UserError listing the flags that differ from those the run started with (`recorded`; None: a last.pt
        written before flags were recorded), except RESUME_MAY_CHANGE and a longer --num_epochs."""
        current = self.opts.flags
        if recorded is None or current is None:
            return
        differ = []
        for name in sorted(set(recorded) | set(current)):
            then, now = recorded.get(name), current.get(name)
            if name in RESUME_MAY_CHANGE or _same(then, now) or (name in EPOCH_FLAGS and _longer(now, then)):
                continue
            differ.append(f"--{name} {_shown_flag(then)} then, {_shown_flag(now)} now")
        if differ:
            raise UserError(f"--resume: {shown(self.dir)} was started with other flags ({'; '.join(differ)}); resume "
                            "with the flags it started with (only a longer --num_epochs, --max_minutes, --device, "
                            "--data_root and the output paths may change), or start afresh without --resume")

    def load_last(self):
        t = self.task
        ckpt = load_checkpoint(self.last, t.kind)
        if "optimizers" not in ckpt or "modules" not in ckpt:
            raise CheckpointError(f"{self.last} is a shipped (weights-only) checkpoint, not a training state; "
                                  "--resume needs the last.pt a training run writes")
        self.check_flags(ckpt.get("flags"))  # before the weights: another architecture is a flag, not a shape
        try:
            for name, module in t.modules.items():
                load_state(module, ckpt["modules"][name], self.last)
            for name, opt in t.optimizers.items():
                opt.load_state_dict(ckpt["optimizers"][name])
            t.load_extra_state(ckpt["extra"])
            set_rng_state(ckpt["rng"])
            self.step, self.best, self.lr_factor = ckpt["step"], ckpt["best"], ckpt["lr_factor"]
            self.minutes = ckpt["minutes"]
            pending = ckpt.get("pending")
            self.sums, self.count = (dict(pending["sums"]), pending["count"]) if pending else ({}, 0)
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{self.last}: incomplete training state ({type(err).__name__}: {err}); "
                                  "start afresh without --resume") from None
        if dataclasses.asdict(t.config) != dict(ckpt["config"]):
            raise UserError(f"{self.last} was trained with {ckpt['config']}; pass the same model flags to resume")
        if pending and pending["provisional_best"]:
            self.best = None  # the window's end writes best.pt, as in an uninterrupted run
        # rows written after the last save belong to lost work, and a stop's own row to a window still open
        self.log.truncate("step", self.step - 1 if pending else self.step)
        self.saved_step = self.step

    def save_best(self):
        save_checkpoint(self.best_path, self.task.kind, self.task.config, step=self.step,
                        **self.task.shipped_state())

    # ---- loop pieces
    def set_lr(self):
        self.lr_scale = scale = self.lr_factor * self.task.lr_scale(self.step)
        for name, opt in self.task.optimizers.items():
            for group, base in zip(opt.param_groups, self.base_lrs[name]):
                group["lr"] = base * scale
        return scale

    def stream(self):
        """(epoch, batch) from self.step on; an epoch's order depends on (seed, epoch) only."""
        per_epoch = self.task.steps_per_epoch
        epoch, offset = divmod(self.step, per_epoch)
        while True:
            gen = torch.Generator().manual_seed(self.opts.seed * 100003 + epoch)
            for i, batch in enumerate(self.task.batches(epoch, gen)):
                if i >= offset:
                    yield epoch, batch
            epoch, offset = epoch + 1, 0

    def rollback(self, err, rollbacks):
        factor = self.lr_factor  # each rollback halves the rate again: last.pt holds the rate before them
        self.load_last()
        self.lr_factor = factor / 2
        tqdm.write(f"step {self.step}: {err}; rolled back to {self.last} (rollback {rollbacks}), "
                   f"learning rate x{self.lr_factor:g}")

    def evaluate(self, epoch, inside_window=False):
        """Evaluate, log a row, keep the best and save last.pt. inside_window: a --max_minutes stop between two
        evaluations, whose row a resumed run drops (see `save_last`); it keeps the best of the windows' ends, or
        provisionally writes best.pt when there is none yet, so that the stopped run ships something."""
        sums, count = self.sums, self.count
        metrics = self.task.evaluate(self.step, self.dir)
        row = dict(step=self.step, epoch=epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()}, **metrics,
                   lr_scale=self.lr_scale, minutes=self.minutes)
        self.log.write(**{k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
        plot_curves(self.log.rows(), "step", self.task.curve_panels, self.dir / "curves.png",
                    title=f"{self.task.kind} training")
        saved = ""
        if self.task.healthy():
            rank = self.task.rank(metrics)
            provisional = inside_window and self.best is None
            if (provisional or not inside_window) and (self.best is None or rank is None or rank < self.best["rank"]):
                self.best = dict(rank=rank, step=self.step, **metrics) if rank is not None else dict(step=self.step)
                self.save_best()
                saved = "  * best"
            self.save_last(dict(sums=sums, count=count, provisional_best=provisional) if inside_window else None)
        else:
            saved = "  (not checkpointed: the task reports an unhealthy state)"
        self.sums, self.count = {}, 0
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        tqdm.write(text + saved, file=sys.stdout)


def _same(a, b):
    """Flag values equal up to a checkpoint's round trip (tuples come back as tuples or lists)."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return list(a) == list(b)
    return a == b


def _longer(now, then):
    return isinstance(now, int) and isinstance(then, int) and now >= then


def _shown_flag(value):
    if value is None or value is False:
        return "not given"
    if value is True:
        return "given"
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def fit(task, opts):
    """Train `task` with the options; returns the path of the shipped checkpoint (or best.pt)."""
    check_outputs(opts.save_path, opts.figures_dir, opts.logdir)
    try:
        return _fit(task, opts)
    finally:
        release_run_folder(opts.logdir)


def _fit(task, opts):
    run = Run(task, opts)
    if opts.resume:
        run.load_last()
        print(f"resumed from {run.last} at step {run.step}", flush=True)
    else:
        run.log.path.unlink(missing_ok=True)  # a fresh run starts a fresh log
        run.save_last()                        # so that a first-window divergence can roll back
    rollbacks, deadline = 0, time.time() + 60 * opts.max_minutes if opts.max_minutes else float("inf")
    stopped_early = timed_out = False
    stream = run.stream()
    bar = tqdm(total=opts.total_steps, initial=run.step, desc=f"{task.kind} training", disable=not opts.progress,
               mininterval=1 if sys.stderr.isatty() else 30)
    clock = time.time()
    try:
        while run.step < opts.total_steps:
            epoch, batch = next(stream)
            run.set_lr()
            task.step = run.step  # the step about to be taken, for schedules inside the step (e.g. KL warm-up)
            try:
                stats = task.train_step(batch)
            except TrainingDiverged as err:
                rollbacks += 1
                if rollbacks > opts.max_rollbacks:
                    if isinstance(err, StopEarly):
                        tqdm.write(f"step {run.step}: {err} again after {opts.max_rollbacks} rollbacks; training "
                                   "stops early and ships the best weights so far")
                        stopped_early = True
                        break
                    raise TrainingDiverged(f"{err} at step {run.step}; gave up after {opts.max_rollbacks} rollbacks "
                                           f"(the last good state is {run.last})") from None
                run.rollback(err, rollbacks)
                stream, bar.n = run.stream(), run.step
                clock = time.time()
                continue
            run.step += 1
            for k, v in stats.items():
                run.sums[k] = run.sums.get(k, 0.0) + v
            run.count += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(stats.items())[:3]}, refresh=False)
            now = time.time()
            run.minutes += (now - clock) / 60
            clock = now
            timed_out = now >= deadline
            window_end = run.step % opts.eval_every == 0 or run.step == opts.total_steps
            if window_end or timed_out:
                run.evaluate(epoch, inside_window=not window_end)
                clock = time.time()
            if timed_out:
                print(f"--max_minutes {opts.max_minutes} reached at step {run.step}; continue with --resume", flush=True)
                break
    except KeyboardInterrupt:
        raise Interrupted(f"{task.kind} training at step {run.step}; --resume continues from step {run.saved_step} "
                          f"({shown(run.last)})") from None
    finally:
        bar.close()
    finished = stopped_early or (not timed_out and run.step >= opts.total_steps)
    return ship(task, run, opts, complete=opts.complete_run and finished)


def ship(task, run, opts, complete):
    if not run.best_path.exists():
        raise UserError(f"no evaluation was healthy enough to keep; nothing to ship (see {run.log.path})")
    state = task.finalize(run.best_path, run.dir)
    target = opts.save_path or (opts.default_save_path if complete else None)
    if target is None:
        path = save_checkpoint(run.dir / "shipped.pt", task.kind, task.config, **state)
        print(f"shipped form in {path} (not copied to {opts.default_save_path}: a short or partial run; "
              f"pass {opts.save_flag} to write it elsewhere)")
        return path
    path = save_checkpoint(target, task.kind, task.config, **state)
    print(f"shipped checkpoint: {path} (best {run.best})")
    figures = opts.figures_dir or (opts.default_figures_dir if complete else None)
    if figures is not None:
        task.write_figures(path, run.dir, Path(figures))
    return path
