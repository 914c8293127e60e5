"""The training loop shared by every ``Method``: phases, precision, accumulation, EMA, logs, checkpoints.

Per iteration (``batch_size`` samples over all ranks, ``b = batch_size // world`` per rank):

1. ``batch = data.batch(nimg + rank * b, b, seed=seed)`` -- data are a pure function of the position, so
   a resumed run replays exactly the same samples and 2 ranks x b see what 1 rank x 2b sees.
2. For each phase due on this iteration (``iteration % phase.every == 0``): the loss of every micro-batch
   with a generator seeded by ``(seed, rank, nimg, phase_index[, micro])``, under bf16 autocast only on CUDA
   with ``precision="bf16"`` (never on CPU); backward (DDP ``no_sync`` except on the last micro-batch);
   then for each role the phase trains: per-network norm clipping, the learning rate from ``lr_at``, an
   optimizer step and the role's EMA update. Gradients other roles got are dropped. A phase whose gradient norm
   (or, on one rank, loss) is not finite is skipped whole (no optimizer step, no EMA update) and counted;
   ``max_nonfinite_steps`` such iterations in a row stop the run with ``NonFiniteError`` before anything is
   saved, so the last checkpoint stays the last good one.
3. ``nimg += batch_size``; logs (rank-averaged), evaluation (rank 0, EMA networks) and checkpoints when
   their sample intervals are crossed, when their wall-time intervals have passed (``log_every_seconds``, the
   first log after 5 s; ``ckpt_every_seconds``), and always at the end.

SIGINT / SIGTERM during ``fit`` (main thread): the current step finishes, a checkpoint is written atomically and
``TrainingInterrupted`` is raised (the CLI prints one line and exits 130); a second signal interrupts at once.

In a phase, the roles it trains are passed to ``Method.loss`` DDP-wrapped (world > 1), other trainable
roles unwrapped and frozen roles (eval mode, no grad, never wrapped) as they are. The loop itself is kept
flat in the spirit of nanoGPT's ``train.py`` (karpathy/nanoGPT, MIT); the nimg-based counting, reseeding
and resume-on-rerun follow the description of the EDM2 training loop (reimplemented, not copied).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fewstep.data.source import DataSource, seeded
from fewstep.methods.base import Batch, Method, Phase
from fewstep.train import distributed as dist
from fewstep.train.checkpoint import Checkpoint, latest_dir, load_latest, save_checkpoint, unwrap_module
from fewstep.train.ema import EMA
from fewstep.train.logging import JsonlLogger, Logger, ProgressBar, status_line, write_env
from fewstep.train.optim import lr_at, make_optimizer, resolve_optim, set_lr

Evaluator = Callable[[Method, dict[str, nn.Module], int], Mapping[str, float]]
"""``(method, ema_nets, nimg) -> {metric: value}``, run on rank 0; ``ema_nets`` also holds frozen roles."""


class ConfigMismatchError(ValueError):
    """The run directory holds a different config and ``allow_config_change`` is False."""


class NonFiniteError(RuntimeError):
    """``max_nonfinite_steps`` iterations in a row had a non-finite loss or gradient; nothing was saved."""


class TrainingInterrupted(Exception):
    """SIGINT / SIGTERM stopped training after a checkpoint was written; re-running resumes."""

    exit_code = 130


RESUMABLE = ("run_dir", "train.total_nimg", "train.ckpt_every_nimg", "train.log_every_nimg", "train.max_seconds",
             "train.device", "train.ckpt_every_seconds", "train.log_every_seconds", "train.max_nonfinite_steps",
             "trainer.total_nimg")
"""Config fields a run may change between invocations without ``allow_config_change``: where the run lives, how
long it trains (a longer ``total_nimg`` continues it; a decaying LR schedule is stretched from there) and
bookkeeping. Every other difference is refused, all differing fields listed in one line."""


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _diff(old: Any, new: Any, prefix: str = "", defaults: Any = None) -> list[str]:
    """Dotted keys whose values differ between two JSON trees. A key absent from ``old`` whose ``new`` value
    equals its entry in ``defaults`` (a tree shaped like ``new``) is not a change: a field added by a newer
    version, at its default."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        defaults = defaults if isinstance(defaults, dict) else {}
        for key in sorted(set(old) | set(new)):
            if key not in old and key in defaults and new.get(key) == defaults[key]:
                continue
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.", defaults.get(key))
        return out
    return [] if old == new else [prefix.rstrip(".") or "<root>"]


def _crossed(prev: int, cur: int, every: int) -> bool:
    return every > 0 and prev // every != cur // every


class Trainer:
    """Trains a ``Method`` on a ``DataSource``; ``fit()`` resumes from ``run_dir/checkpoints/latest``.

    Args:
        method: the method; its ``trainable()`` roles get an optimizer, an EMA and a DDP wrapper each.
        data: position-addressable data (``DataSource.batch(start, size, seed=...)``).
        run_dir: output directory (config.json, env.json, log.jsonl, checkpoints/).
        seed: seeds data order and every training generator.
        total_nimg: training length in samples. batch_size: global batch (divisible by the world size).
        lr, optimizer, betas, eps, weight_decay: optimizer defaults (see ``make_optimizer``).
        warmup_nimg, lr_decay, lr_final_ratio: learning-rate schedule (see ``lr_at``).
        grad_clip: max gradient norm per network (0: no clipping).
        precision: ``"bf16"`` autocasts forward and loss on CUDA; CPU always runs float32.
        ema_halflife_nimg, ema_rampup: EMA half-life in samples and optional ramp-up ratio.
        ckpt_every_nimg, log_every_nimg, eval_every_nimg: intervals in samples; each also runs at the end
            (eval only with evaluators), and 0 means only at the end.
        ckpt_every_seconds, log_every_seconds: wall-time intervals of checkpoints and log lines beside the sample
            intervals (0: off); the first log line comes after 5 s.
        max_nonfinite_steps: stop after this many iterations in a row with a non-finite loss or gradient.
        evaluators: callables ``(method, ema_nets, nimg) -> {name: float}``.
        device: ``"cpu"``, ``"cuda"`` (becomes ``cuda:LOCAL_RANK``) or a device.
        config: the run config (JSON-able); default: the method's config and these hyper-parameters.
        config_defaults: the defaults of ``config``'s fields (``config.defaults_like``): a field missing from
            an older run's config.json that sits at its default here is not a change.
        allow_config_change: accept a ``config`` that differs from ``run_dir/config.json``.
        max_seconds: wall-clock budget over all resumes; then stop with a checkpoint.
        progress: print status lines on rank 0.
        keep: checkpoints kept on disk.
        per_role_optim: role -> overrides of ``optimizer``/``lr``/``betas``/``eps``/``weight_decay``/``lr_mults``.
        micro_batch: per-rank micro-batch for gradient accumulation (default: the per-rank batch).
        loggers: extra loggers (e.g. ``TensorBoardLogger``) fed the same records as ``log.jsonl``.
        ddp_find_unused: pass ``find_unused_parameters=True`` to DDP.
    """

    def __init__(self, method: Method, data: DataSource, *, run_dir: str | Path, seed: int, total_nimg: int,
                 batch_size: int, lr: float = 1e-3, optimizer: str = "adamw",
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 warmup_nimg: int = 0, lr_decay: str = "constant", lr_final_ratio: float = 0.0,
                 grad_clip: float = 1.0, precision: Literal["fp32", "bf16"] = "bf16",
                 ema_halflife_nimg: float = 50_000, ema_rampup: float | None = None,
                 ckpt_every_nimg: int = 1_000_000, log_every_nimg: int = 10_000, eval_every_nimg: int = 0,
                 evaluators: Sequence[Evaluator] = (), device: str | torch.device = "cpu",
                 config: dict | None = None, config_defaults: dict | None = None,
                 allow_config_change: bool = False, max_seconds: float | None = None, progress: bool = True,
                 keep: int = 2,
                 per_role_optim: dict[str, dict] | None = None,
                 micro_batch: int | None = None, loggers: Sequence[Logger] = (),
                 ddp_find_unused: bool = False, ckpt_every_seconds: float = 0.0, log_every_seconds: float = 0.0,
                 max_nonfinite_steps: int = 20) -> None:
        if not hasattr(data, "batch"):
            raise TypeError("data must be a DataSource (with .batch(start, size, seed=...))")
        if Path(run_dir).exists() and not Path(run_dir).is_dir():
            raise ValueError(f"the run folder {run_dir} is a file: pass another --run-dir")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        dist.init("nccl" if torch.device(device).type == "cuda" else "gloo")
        self.world, self.rank = dist.world(), dist.rank()
        if batch_size % self.world:
            raise ValueError(f"batch_size {batch_size} is not divisible by the world size {self.world}")
        self.local_batch = batch_size // self.world
        self.micro_batch = micro_batch or self.local_batch
        if self.local_batch % self.micro_batch:
            raise ValueError(f"per-rank batch {self.local_batch} is not divisible by micro_batch "
                             f"{micro_batch}")
        self.accum = self.local_batch // self.micro_batch
        self.method, self.data, self.run_dir = method, data, Path(run_dir)
        self.seed, self.total_nimg, self.batch_size = seed, total_nimg, batch_size
        self.schedule = {"warmup_nimg": warmup_nimg, "total_nimg": total_nimg, "decay": lr_decay,
                         "final_ratio": lr_final_ratio}
        self.grad_clip, self.precision, self.device = grad_clip, precision, dist.local_device(device)
        self.ckpt_every_nimg, self.log_every_nimg, self.eval_every_nimg = ckpt_every_nimg, log_every_nimg, \
            eval_every_nimg
        self.evaluators, self.loggers = tuple(evaluators), tuple(loggers)
        self.allow_config_change, self.max_seconds, self.progress, self.keep = \
            allow_config_change, max_seconds, progress, keep
        self.ddp_find_unused = ddp_find_unused
        self.ckpt_every_seconds, self.log_every_seconds = ckpt_every_seconds, log_every_seconds
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_steps, self._nonfinite_run, self._bad_phase = 0, 0, False
        self._signal: int | None = None

        method.to(self.device)
        self.nets: dict[str, nn.Module] = dict(method.trainable())
        self.frozen: dict[str, nn.Module] = dict(method.frozen())
        if not self.nets or set(self.nets) & set(self.frozen):
            raise ValueError("a method needs >= 1 trainable role, and trainable and frozen roles must differ")
        for net in self.frozen.values():
            net.eval().requires_grad_(False)
        for net in self.nets.values():
            net.train()
        self.phases: tuple[Phase, ...] = tuple(method.phases())
        for phase in self.phases:
            if not set(phase.trains) <= set(self.nets) or phase.every < 1:
                raise ValueError(f"phase {phase} trains unknown roles or has every < 1")
        unknown = set(per_role_optim or {}) - set(self.nets)
        if unknown:
            raise ValueError(f"per_role_optim names unknown roles {sorted(unknown)}; "
                             f"roles: {sorted(self.nets)}")
        defaults = {"optimizer": optimizer, "lr": lr, "betas": tuple(betas), "eps": eps,
                    "weight_decay": weight_decay}
        self.optim_cfg = {r: resolve_optim(defaults, (per_role_optim or {}).get(r)) for r in self.nets}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for r, net in self.nets.items():
            c = self.optim_cfg[r]
            self.optimizers[r] = make_optimizer(net, c["optimizer"], lr=c["lr"], betas=c["betas"], eps=c["eps"],
                                                weight_decay=c["weight_decay"], lr_mults=c.get("lr_mults"))
        self._ema = {r: EMA(net, ema_halflife_nimg, ema_rampup) for r, net in self.nets.items()}
        hparams = {"seed": seed, "batch_size": batch_size, "optim": self.optim_cfg,
                   "warmup_nimg": warmup_nimg, "lr_decay": lr_decay, "lr_final_ratio": lr_final_ratio,
                   "grad_clip": grad_clip,
                   "precision": precision, "ema_halflife_nimg": ema_halflife_nimg, "ema_rampup": ema_rampup}
        if lr_decay != "constant":  # only then does the length change the trajectory
            hparams["total_nimg"] = total_nimg
        default = {"method": type(method).__name__, "method_config": method.config(),
                   "data": getattr(data, "name", type(data).__name__), "trainer": hparams}
        self.config: dict = _jsonable(config if config is not None else default)
        self.config_defaults: dict | None = _jsonable(config_defaults) if config_defaults is not None else None
        self.nimg, self.train_seconds = 0, 0.0
        self._wrapped: dict[str, nn.Module] | None = None
        self._acc: dict[str, tuple[Tensor, int]] = {}
        self._mark = (0, 0.0)
        self._last_logs: dict[str, Any] = {}
        self._last_eval: dict[str, float] = {}
        self._changed: list[str] = []
        self._sinks: list[Logger] = []
        self._bar = ProgressBar(0, 0, enabled=False)

    @property
    def ema(self) -> dict[str, nn.Module]:
        """EMA networks by role (float32, eval mode)."""
        return {r: e.module for r, e in self._ema.items()}

    # ----------------------------------------------------------------------------------------------- fit
    def fit(self) -> dict[str, Any]:
        """Train to ``total_nimg`` (or ``max_seconds``), resuming from the latest checkpoint.

        Returns:
            ``{"nimg", "train_seconds", "logs" (last train record), "eval" (last results), "resumed"}``.
        """
        self._check_config()
        dist.barrier()
        ckpt = load_latest(self.run_dir, repair=dist.is_main())
        if ckpt is not None:
            self._restore(ckpt)
        if self.nimg >= self.total_nimg or self._out_of_time():
            return self._summary(ckpt is not None)
        write_env(self.run_dir, self.device)
        self._sinks = [JsonlLogger(self.run_dir), *self.loggers]
        self._emit({"event": "resume" if ckpt is not None else "start", "nimg": self.nimg,
                    "world": self.world, "per_rank_batch": self.local_batch,
                    "micro_batch": self.micro_batch, "accum": self.accum,
                    "device": str(self.device), "config_changed": self._changed})
        self._bar = ProgressBar(self.total_nimg, self.nimg, enabled=self.progress)
        try:
            with self._signals():
                self._loop()
        finally:
            self._bar.close()
            self._sinks[0].close()
            self._sinks = []
        return self._summary(ckpt is not None)

    @contextlib.contextmanager
    def _signals(self):
        """SIGINT / SIGTERM set a flag the loop checks after each step; a second one interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._signal = None

        def handler(signum, frame):
            if self._signal is not None:
                raise KeyboardInterrupt
            self._signal = signum
            self._bar.write(f"{signal.Signals(signum).name}: finishing this step and writing a checkpoint "
                            "(again to stop at once)")

        # a signal the process ignores (e.g. SIGINT under nohup) stays ignored
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)
               if signal.getsignal(sig) is not signal.SIG_IGN}
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def _loop(self) -> None:
        wrapped = self._ddp_nets()
        start, base = time.perf_counter(), self.train_seconds
        iteration = self.nimg // self.batch_size
        self._mark = (self.nimg, self.train_seconds)
        last_log, last_ckpt, log_wait = start, start, min(5.0, self.log_every_seconds)
        while True:
            batch = self._batch()
            self.method.set_progress(self.nimg, self.total_nimg)
            self._bad_phase = False
            for index, phase in enumerate(self.phases):
                if iteration % phase.every == 0:
                    self._phase(index, phase, batch, wrapped)
            self._count_nonfinite()
            prev = self.nimg
            self.nimg += self.batch_size
            self._bar.update(self.batch_size)
            iteration += 1
            now = time.perf_counter()
            self.train_seconds = base + now - start
            done = self.nimg >= self.total_nimg or self._out_of_time()
            stop, log_due, ckpt_due = self._agreed(
                self._signal is not None, 0 < log_wait <= now - last_log,
                0 < self.ckpt_every_seconds <= now - last_ckpt)
            if done or stop or log_due or _crossed(prev, self.nimg, self.log_every_nimg):
                self._log_train()
                last_log, log_wait = now, self.log_every_seconds
            if self.evaluators and (done or _crossed(prev, self.nimg, self.eval_every_nimg)):
                self._evaluate()
            if self._nonfinite_run and done:
                raise NonFiniteError(f"training ended at {self.nimg:,} samples on {self._nonfinite_run} skipped steps "
                                     "with a non-finite loss or gradient; nothing was saved (lower --train.lr or check "
                                     "the data)")
            if (done or stop or ckpt_due or _crossed(prev, self.nimg, self.ckpt_every_nimg)) and (
                    stop or not self._nonfinite_run):  # never a checkpoint in the middle of a non-finite streak
                self._save()
                last_ckpt = time.perf_counter()
            if done:
                return
            if stop:
                name = signal.Signals(self._signal).name if self._signal is not None else "a signal on another rank"
                raise TrainingInterrupted(f"interrupted by {name} at {self.nimg:,} samples: checkpoint "
                                          f"{self.run_dir / 'checkpoints' / f'nimg_{self.nimg:09d}'} written; run the "
                                          "same command again to resume")

    def _agreed(self, *flags: bool) -> tuple[bool, ...]:
        """Decisions every rank takes together (one small all-reduce when there are several ranks)."""
        return flags if self.world == 1 else dist.any_true_each(flags, self.device)

    def _count_nonfinite(self) -> None:
        if not self._bad_phase:
            self._nonfinite_run = 0
            return
        self.nonfinite_steps += 1
        self._nonfinite_run += 1
        if self._nonfinite_run >= self.max_nonfinite_steps:
            last = latest_dir(self.run_dir)
            kept = f"the last checkpoint {last} is kept" if last is not None else "no checkpoint was written"
            raise NonFiniteError(f"training stopped at {self.nimg:,} samples: {self._nonfinite_run} steps in a row had "
                                 f"a non-finite loss or gradient (each was skipped; {kept}); lower --train.lr or "
                                 "check the data")

    # ------------------------------------------------------------------------------------------ one phase
    def _phase(self, index: int, phase: Phase, batch: Batch, wrapped: dict[str, nn.Module]) -> None:
        trains = phase.trains
        for role in trains:
            self.optimizers[role].zero_grad(set_to_none=True)
        nets = {r: (wrapped[r] if r in trains else net) for r, net in self.nets.items()} | self.frozen
        prefix = f"{phase.name}/" if len(self.phases) > 1 else ""
        m = self.micro_batch
        for micro in range(self.accum):
            mb = batch if self.accum == 1 else {k: v[micro * m:(micro + 1) * m] for k, v in batch.items()}
            with contextlib.ExitStack() as stack:
                if micro < self.accum - 1:
                    for role in trains:
                        if isinstance(wrapped[role], nn.parallel.DistributedDataParallel):
                            stack.enter_context(wrapped[role].no_sync())
                with self._autocast():
                    out = self.method.loss(phase.name, mb, nets, self._generator(index, micro))
                (out.loss / self.accum if self.accum > 1 else out.loss).backward()
            self._accumulate({f"{prefix}{k}": v for k, v in {"loss": out.loss, **out.logs}.items()})
        for role, net in self.nets.items():
            if role not in trains:
                for p in net.parameters():
                    p.grad = None
        nimg = self.nimg + self.batch_size
        grads = {role: [p for p in self.nets[role].parameters() if p.grad is not None] for role in trains}
        norms = {role: torch.nn.utils.get_total_norm([p.grad for p in ps]) for role, ps in grads.items() if ps}
        finite = torch.stack([torch.isfinite(n) for n in norms.values()]).all() if norms else torch.tensor(True)
        if self.world == 1:
            finite = finite & torch.isfinite(out.loss.detach()).all().to(finite.device)
        if not bool(finite):  # skip the whole phase: no step, no EMA update; counted by the loop
            self._bad_phase = True
            for role in trains:
                self.optimizers[role].zero_grad(set_to_none=True)
            return
        for role in trains:
            params = grads[role]
            if self.grad_clip > 0 and params:
                torch.nn.utils.clip_grads_with_norm_(params, self.grad_clip, norms[role])
                self._accumulate({f"grad_norm/{role}": norms[role]})
            set_lr(self.optimizers[role], self._lr(role, nimg))
            self.optimizers[role].step()
            self._ema[role].update(self.nets[role], self.batch_size * phase.every, nimg)

    def _lr(self, role: str, nimg: int) -> float:
        return lr_at(nimg, base_lr=self.optim_cfg[role]["lr"], **self.schedule)

    def _generator(self, phase_index: int, micro: int) -> torch.Generator:
        keys = [self.seed, self.rank, self.nimg, phase_index] + ([micro] if self.accum > 1 else [])
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seeded(*keys).initial_seed())
        return gen

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda" and self.precision == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batch(self) -> Batch:
        start = self.nimg + self.rank * self.local_batch
        batch = self.data.batch(start, self.local_batch, seed=self.seed)
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _ddp_nets(self) -> dict[str, nn.Module]:
        if self._wrapped is None:
            self._wrapped = {r: dist.wrap_ddp(net, self.device, find_unused=self.ddp_find_unused)
                             for r, net in self.nets.items()}
        return self._wrapped

    def _out_of_time(self) -> bool:
        if self.max_seconds is None:
            return False
        return dist.any_true(self.train_seconds >= self.max_seconds, self.device)

    # ------------------------------------------------------------------------------- logs, eval, state
    def _accumulate(self, logs: Mapping[str, Tensor]) -> None:
        for key, value in logs.items():
            value = value.detach().float().mean()
            total, count = self._acc.get(key, (torch.zeros((), device=value.device), 0))
            self._acc[key] = (total + value, count + 1)

    def _emit(self, record: Mapping[str, Any]) -> None:
        for sink in self._sinks:
            sink.log(record)

    def _log_train(self) -> None:
        keys = sorted(self._acc)
        values: list[float] = []
        if keys:
            means = torch.stack([self._acc[k][0].to(self.device) / self._acc[k][1] for k in keys])
            values = dist.all_reduce_mean(means).tolist()
        self._acc = {}
        prev_nimg, prev_sec = self._mark
        sec_per_kimg = (self.train_seconds - prev_sec) / max((self.nimg - prev_nimg) / 1e3, 1e-9)
        self._mark = (self.nimg, self.train_seconds)
        logs = dict(zip(keys, values))
        lrs = {f"lr/{r}": self._lr(r, self.nimg) for r in self.nets}
        self._last_logs = {"event": "train", "nimg": self.nimg, "kimg": self.nimg / 1e3,
                           "train_seconds": round(self.train_seconds, 3), "sec_per_kimg": sec_per_kimg,
                           **lrs, **logs}
        self._emit(self._last_logs)
        if self.progress and dist.is_main():
            shown = {k: v for k, v in logs.items() if not k.startswith("grad_norm/")}
            self._bar.write(status_line(self.nimg, shown, lr=next(iter(lrs.values())),
                                        sec_per_kimg=sec_per_kimg, elapsed=self.train_seconds))

    def _evaluate(self) -> None:
        if dist.is_main():
            ema_nets = {**self.ema, **self.frozen}
            results: dict[str, float] = {}
            for evaluator in self.evaluators:
                results.update({k: float(v) for k, v in evaluator(self.method, ema_nets, self.nimg).items()})
            self._last_eval = results
            self._emit({"event": "eval", "nimg": self.nimg, **results})
            if self.progress:
                self._bar.write(status_line(self.nimg, results))
        dist.barrier()

    def _save(self) -> None:
        bad = [r for r, n in self.nets.items() if not all(bool(p.isfinite().all()) for p in n.parameters())]
        if self._agreed(bool(bad))[0]:
            raise NonFiniteError(f"training stopped at {self.nimg:,} samples: the weights of {bad or 'a rank'} are "
                                 "not finite; the last checkpoint is kept (lower --train.lr or check the data)")
        if dist.is_main():
            state = {"nimg": self.nimg, "train_seconds": self.train_seconds, "batch_size": self.batch_size,
                     "world": self.world, "seed": self.seed, "nonfinite_steps": self.nonfinite_steps,
                     "optimizers": {r: opt.state_dict() for r, opt in self.optimizers.items()},
                     "method_state": self.method.method_state()}
            weights = {r: n.state_dict() for r, n in self.nets.items()}
            ema = {r: e.state_dict() for r, e in self._ema.items()}
            save_checkpoint(self.run_dir, self.nimg, weights, ema, state, self.config, keep=self.keep)
        dist.barrier()

    def _restore(self, ckpt: Checkpoint) -> None:
        missing = sorted(set(self.nets) - set(ckpt.weights))
        if missing:
            raise ValueError(f"checkpoint {ckpt.path} lacks roles {missing} (has {sorted(ckpt.weights)})")
        optim_states = ckpt.train_state.get("optimizers", {})
        for role, net in self.nets.items():
            unwrap_module(net).load_state_dict(ckpt.weights[role])  # checkpoints hold unwrapped keys
            self._ema[role].load_state_dict(ckpt.ema.get(role, ckpt.weights[role]))
            if role in optim_states:
                opt = self.optimizers[role]
                opt.load_state_dict(optim_states[role])
                for group in opt.param_groups:  # a changed config wins over the saved hyper-parameters
                    group["betas"], group["eps"] = self.optim_cfg[role]["betas"], self.optim_cfg[role]["eps"]
        self.method.load_method_state(ckpt.train_state.get("method_state", {}))
        self.nimg = int(ckpt.train_state["nimg"])
        self.nonfinite_steps = int(ckpt.train_state.get("nonfinite_steps", 0))
        self.train_seconds = float(ckpt.train_state.get("train_seconds", 0.0))

    def _check_config(self) -> None:
        """Compare with the run's config.json: a folder without a checkpoint is a fresh run (its config.json is
        replaced); otherwise only ``RESUMABLE`` fields may change, unless ``allow_config_change``."""
        path = self.run_dir / "config.json"
        if path.is_file() and (self.run_dir / "checkpoints").is_dir() and any(
                (self.run_dir / "checkpoints").glob("nimg_*")):
            old = json.loads(path.read_text())
            if old == self.config:
                return
            self._changed = _diff(old, self.config, defaults=self.config_defaults)
            refused = [k for k in self._changed if k not in RESUMABLE]
            if refused and not self.allow_config_change:
                raise ConfigMismatchError(
                    f"{path} differs from this run's config (changed: {', '.join(refused)}); use another --run-dir, "
                    "or pass allow_config_change=True (CLI: --allow-config-change) to continue anyway")
        if dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(".config.json.tmp")
            tmp.write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
            tmp.replace(path)

    def _summary(self, resumed: bool) -> dict[str, Any]:
        return {"nimg": self.nimg, "train_seconds": self.train_seconds, "logs": self._last_logs,
                "eval": self._last_eval, "resumed": resumed}
