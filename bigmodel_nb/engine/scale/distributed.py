"""Training past one process: the same run on Ray Train workers (``%%train --workers N``).

    run = DistributedRun(model, "digits", TrainConfig(epochs=3), workers=2); run.run_here()

Ray Train's ``TorchTrainer`` starts N worker processes (on a local cluster, or on ``cluster``),
sets up ``torch.distributed`` between them (gloo on CPU, NCCL on GPU) and runs `train_worker` on
each. The model defined in the notebook travels to the workers by value (cloudpickle), is wrapped
in DDP (or sharded with FSDP2's ``fully_shard``), and each worker takes its slice of every global
batch: ``--batch-size`` stays the global batch, so a run on N workers follows the same trajectory
as one process with that batch. Rank 0 posts its rows to a `Mailbox` actor that the notebook reads while
``fit()`` runs in a thread; a Stop sets a flag there that rank 0 reads when it posts and broadcasts to every
rank at that logging step. Each epoch rank 0 writes a checkpoint through ``ray.train.report``; when a worker dies,
``FailureConfig`` restarts the group from the last one and the run records the restart. The trained
weights come back into ``run.model``.

Ray is optional: ``pip install bigmodel-nb[distributed]``.
"""
from __future__ import annotations

import contextlib
import copy
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..core.config import TrainConfig, optimizer_steps, plan
from ..core.device import amp_choice, resolve_amp
from ..core.errors import BigModelError, describe_exception, quiet_logger
from ..core.run import Run

# Bounded waits when a cluster address does not answer (Ray's defaults retry for ~14 minutes).
# Two of these are read when `ray` is first imported, so they are set before that.
RAY_TIMEOUTS = {"RAY_gcs_server_port_wait_time_s": "1", "RAY_py_gcs_connect_timeout_s": "5",
                "RAY_gcs_rpc_server_connect_timeout_s": "3"}
# Faster start-up and polling for notebook-sized runs (a controller poll every 0.5 s, not 2 s).
RAY_TRAIN_SETTINGS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
                      "RAY_TRAIN_METRICS_ENABLED": "0", "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
                      "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180"}


def import_ray():
    """Ray and Ray Train, or one sentence saying what to install."""
    for key, value in {**RAY_TIMEOUTS, **RAY_TRAIN_SETTINGS}.items():
        os.environ.setdefault(key, value)
    try:
        import ray
        import ray.train  # noqa: F401
        import ray.train.torch  # noqa: F401
    except ImportError:
        raise BigModelError("--workers trains on Ray Train, which is not installed; "
                            "pip install 'bigmodel-nb[distributed]' (or 'ray[train]').") from None
    return ray


def connect(cluster: str | None, timeout: float = 5.0):
    """Join `cluster` ("host:port", "ray://host:port" or "auto"), or start a local Ray cluster."""
    ray = import_ray()
    if cluster and cluster != "auto":
        address = cluster.removeprefix("ray://")
        host, _, port = address.rpartition(":")
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if cluster and cluster != "auto" and current.rpartition(":")[2] != port:
            raise BigModelError(f"This session is already connected to the Ray cluster at {current}; restart the "
                                f"kernel to use --cluster {cluster}, or leave --cluster out.")
        return ray
    if cluster and cluster != "auto":
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
        except (OSError, ValueError):
            raise BigModelError(f"No Ray cluster answers at '{cluster}' within {timeout:.0f} s; check the address "
                                "(host:port of the head node, e.g. 10.0.0.5:6379) or leave --cluster out to "
                                "train on a local cluster.") from None
    try:
        with quiet_logger(_RAY_AUTH_LOGGER):
            ray.init(address=cluster, log_to_driver=False, include_dashboard=False, ignore_reinit_error=True,
                     configure_logging=False)
    except Exception as exc:
        raise BigModelError(f"Could not connect to the Ray cluster at '{cluster or 'local'}': "
                            f"{describe_exception(exc)}.") from None
    return ray


# Ray logs a notice about its token authentication while a local cluster starts ("Token authentication is
# enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out..."): library noise under a notebook cell.
# Only the notice is silenced; the authentication itself is left as Ray configures it.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class DistributedRun(Run):
    """A `Run` whose steps happen on Ray Train workers; the notebook keeps the history, the dashboard
    and, at the end, the trained weights. Pause is not available (Stop is).

    Example: ``DistributedRun(model, "digits", TrainConfig(epochs=2), workers=2).run_here()``
    """

    can_pause = False

    def __init__(self, model, data, config=None, callbacks=(), *, workers: int, gpus_per_worker: float = 0,
                 cluster: str | None = None, strategy: str = "ddp", max_failures: int = 1, name: str = "run",
                 optimizer=None, kind: str = "train"):
        if isinstance(optimizer, str):  # a name, as bigmodel_nb.train(..., optimizer="sgd") passes it
            config, optimizer = replace(config or TrainConfig(), optimizer=optimizer), None
        if optimizer is not None:
            raise BigModelError("--workers builds the optimizer on every worker from --optimizer; "
                                "leave `optimizer` out of the cell.")
        if not isinstance(workers, int) or workers < 1:
            raise BigModelError(f"--workers must be a whole number ≥ 1, not {workers!r}.")
        if strategy not in ("ddp", "fsdp"):
            raise BigModelError(f"Unknown --strategy '{strategy}'; choose ddp or fsdp.")
        config = config or TrainConfig()
        if config.compile or config.batch_size == "auto":  # before Run.__init__ resolves "auto" here
            raise BigModelError("--compile and --batch-size auto are not available with --workers yet; "
                                "drop them or train on one process.")
        # The notebook only checks the model and holds the history: it never trains, so --amp is resolved
        # on each worker (bf16 on GPU workers even when the notebook has no GPU). Checked here: a typo, and
        # what CPU workers cannot do.
        if gpus_per_worker:
            amp_choice(config.amp)
        else:
            resolve_amp(config.amp, "cpu")
        # With GPU workers the notebook's copy stays on the CPU: on a local cluster its GPU is a worker's.
        here = replace(config, amp="off", device="cpu" if gpus_per_worker else config.device)
        super().__init__(model, data, here, callbacks, name=name, kind=kind)
        self.config = replace(self.config, amp=config.amp, device=config.device)
        if self.config.batch_size % workers:
            raise BigModelError(f"--batch-size {self.config.batch_size} is the global batch and must split evenly "
                                f"over {workers} workers; use a multiple of {workers}.")
        self.workers, self.gpus_per_worker, self.cluster = workers, gpus_per_worker, cluster
        self.strategy, self.max_failures = strategy, max_failures
        self.restarts = 0  # worker groups restarted from a checkpoint after a failure
        self.storage = Path(self.config.checkpoint or tempfile.mkdtemp(prefix="bigmodel_nb-ray-")).resolve()
        self.ray = connect(cluster)
        self._check_resources()
        self.notes.append(f"{workers} Ray Train workers · {strategy.upper()} · global batch {self.config.batch_size} "
                          f"({self.config.batch_size // workers} per worker) · checkpoints in {self.storage}")

    def _check_resources(self) -> None:
        """Ask for what the cluster has: Ray would otherwise wait for it forever."""
        if 0 < self.gpus_per_worker < 1 and self.workers > 1:
            raise BigModelError(f"--gpus-per-worker {self.gpus_per_worker:g} would put several workers on one GPU, "
                                "which NCCL refuses; use --gpus-per-worker 1 (one GPU each) or 0 (CPUs).")
        have = self.ray.cluster_resources()
        if self.gpus_per_worker and have.get("GPU", 0) < self.workers * self.gpus_per_worker:
            raise BigModelError(f"--gpus-per-worker {self.gpus_per_worker:g} × {self.workers} workers needs "
                                f"{self.workers * self.gpus_per_worker:g} GPUs but the Ray cluster has "
                                f"{have.get('GPU', 0):g}; lower --gpus-per-worker, "
                                "or use --gpus-per-worker 0 for CPUs.")
        if have.get("CPU", 0) < self.workers:
            raise BigModelError(f"{self.workers} workers need {self.workers} CPUs but the Ray cluster has "
                                f"{have.get('CPU', 0):g}; use --workers {max(1, int(have.get('CPU', 0)))} or fewer.")

    def pause(self) -> Run:
        raise BigModelError("A --workers run cannot be paused; Stop it (it keeps its checkpoints) instead.")

    def save_checkpoint(self) -> None:  # Ray Train writes the checkpoints, on the workers
        pass

    def _loop(self):
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        # Callbacks declared on_workers run in every worker's loop; the rest stay here and get the streamed rows.
        shipped, self.callbacks = self.callbacks.split()
        mailbox = self.ray.remote(Mailbox).options(num_cpus=0).remote()
        use_gpu = self.gpus_per_worker > 0
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"model": self.model.cpu(), "data": self.data, "config": self.config, "seed": self.seed,
                               "strategy": self.strategy, "mailbox": mailbox,
                               "callbacks": shipped.callbacks},
            scaling_config=ScalingConfig(num_workers=self.workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": 1,
                                                               **({"GPU": self.gpus_per_worker} if use_gpu else {})}),
            run_config=RunConfig(name=f"{self.name}-{time.time_ns()}", storage_path=str(self.storage),
                                 failure_config=FailureConfig(max_failures=self.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        )
        outcome: dict = {}

        def fit():
            try:
                outcome["result"] = trainer.fit()
            except BaseException as exc:  # noqa: BLE001 - reported in the notebook, not lost in a thread
                outcome["error"] = exc

        thread = threading.Thread(target=fit, name=f"bigmodel_nb-ray-{self.name}", daemon=True)
        thread.start()
        self.total_steps = self._planned_steps()
        self.emit("on_train_begin", {"total_steps": self.total_steps, "steps_per_epoch": self._steps_per_epoch,
                                      "epochs": self._epochs, "start_step": 0, "device": f"{self.workers} Ray workers",
                                      "amp": self.amp.name, "params": sum(p.numel() for p in self.model.parameters())})
        stop_sent, running = False, True
        try:
            while running:
                running = thread.is_alive()  # read before the last take: rows posted before the end are in it
                yield  # the driver's boundary: Stop is read here and passed to the workers
                if self.stop_requested and not stop_sent:
                    self.ray.get(mailbox.stop.remote())
                    stop_sent = True
                for message in self.ray.get(mailbox.take.remote()):
                    self._receive(message)
                time.sleep(0.05)
        finally:
            thread.join()
            self.ray.kill(mailbox)
            self.model.to(self.device)  # it went to the CPU to be shipped; failed or not, it comes back
        if "error" in outcome:
            self.fail(f"Ray Train failed: {_worker_error(outcome['error'])}")
            return
        state = outcome["result"].return_value
        if state:  # the last weights, or with --early-stop the best validation's
            self.model.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
            if self.config.early_stop and self.best is not None:
                self.notes.append(self.validation.describe())

    def _planned_steps(self) -> int:
        self._steps_per_epoch = optimizer_steps(self.config, self.data.train)
        self._epochs, total = plan(self.config, self._steps_per_epoch)
        return total

    def _receive(self, message: dict) -> None:
        kind = message.pop("kind")
        if kind == "restart":
            self.restarts += 1
            self.history = [r for r in self.history if r["step"] <= message["step"]]
            self.notes.append(f"worker group restarted from the checkpoint at step {message['step']} "
                              f"(restart {self.restarts})")
        elif kind == "train":
            self.step, self.epoch = message["step"], message["epoch"]
            self.history.append(message)
            self.emit("on_step_end", dict(message))
        elif kind == "val":
            self.history.append(message)
            self.validation.update(message)  # the weights stay on the workers: rank 0 returns the best ones
            self.best = self.validation.best
            self.emit("on_eval_end", dict(message))
        elif kind == "early_stop":
            self.validation.stopped_at = message["step"]


class Mailbox:
    """The one Ray actor between the notebook and a run's workers: rank 0 posts rows, the notebook takes them
    and posts Stop. One actor rather than a Ray queue each way: one process fewer, and one round trip per
    logging step instead of two, since posting a row answers whether to stop.
    Example: ``ray.remote(Mailbox).remote()``"""

    def __init__(self):
        self.rows: list[dict] = []
        self.stopping = False

    def post(self, row: dict) -> bool:
        """Keep `row` for the notebook; whether Stop was asked for (rank 0 reads it at each logging step)."""
        self.rows.append(row)
        return self.stopping

    def take(self) -> list[dict]:
        rows, self.rows = self.rows, []
        return rows

    def stop(self) -> None:
        self.stopping = True


def _worker_error(exc: BaseException) -> str:
    failures = getattr(exc, "worker_failures", None)
    if failures:
        rank, error = sorted(failures.items())[0]
        return f"worker {rank}: {describe_exception(error)}"
    return describe_exception(exc)


# -- on each worker --------------------------------------------------------------------------------
def train_worker(cfg: dict) -> dict | None:
    """The training loop Ray runs on every worker. Rank 0 reports rows and returns the weights."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    from ..core.batches import batch_len, take
    from ..core.callbacks import CallbackList
    from ..core.config import optimizer_steps, plan
    from ..core.early_stop import BestValidation
    from ..core.forward import resolve_loss
    from ..core.metrics import Metrics, evaluate_model
    from ..core.optim import make_optimizer, make_schedule, steps_on_validation
    from ..core.step import Step, step_groups

    FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, on rank 0's CPU
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    config, data = cfg["config"], cfg["data"]

    def post(row: dict) -> bool:
        """Hand `row` to the notebook and wait (so rows arrive in order); whether Stop was asked for."""
        return ray.get(cfg["mailbox"].post.remote(row))

    device = ray.train.torch.get_device()
    model = cfg["model"].to(device)
    steps_per_epoch = optimizer_steps(config, data.train)
    epochs, total_steps = plan(config, steps_per_epoch)
    step, start_epoch, saved = 0, 0, None
    tracker = BestValidation(config.monitor, patience=config.early_stop, min_delta=config.min_delta, task=data.task)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart after a failure: carry on from the last epoch saved
        with checkpoint.as_directory() as folder:
            saved = torch.load(Path(folder) / "state.pt", map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        step, start_epoch = int(saved["step"]), int(saved["epoch"])
        tracker.load(saved.get("early_stop") or {}, saved.get("best"), saved.get("best_weights"))
        if rank == 0:
            post({"kind": "restart", "step": step})
    # FSDP shards the model in place (and it cannot be deep-copied after), so rank 0 keeps an unsharded
    # twin to evaluate with; under DDP the model itself stays whole.
    plain = copy.deepcopy(model) if cfg["strategy"] == "fsdp" and rank == 0 else model
    wrapped = _wrap(model, cfg["strategy"], device)  # before the optimizer: FSDP replaces the parameters
    params = list(wrapped.parameters())
    optimizer = make_optimizer(config.optimizer, params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = make_schedule(config.schedule, optimizer, total_steps, config.warmup)
    if saved is not None:
        set_optimizer_state_dict(wrapped, optimizer, saved["optimizer"], options=FULL)
        if schedule is not None and saved.get("schedule"):
            schedule.load_state_dict(saved["schedule"])
    loss_fn = resolve_loss(config.loss, data.task)
    amp = resolve_amp(config.amp, device)  # the workers' device decides, not the notebook's
    scaler = torch.amp.GradScaler(device.type) if amp.use_scaler else None
    # The core step, on this worker's slice of every batch: DDP/FSDP average the workers' gradients, and
    # the step weights each slice by its share of the global batch, so the result equals one process's.
    train_step = Step(wrapped, optimizer, loss_fn=loss_fn, device=device, amp=amp, scaler=scaler, schedule=schedule,
                      clip=config.grad_clip, params=params, world=world,
                      sync=lambda last: _gradient_sync(wrapped, last))
    bus = CallbackList(cfg["callbacks"])  # the callbacks declared on_workers; the others stay in the notebook
    here = _WorkerState(model=wrapped, rank=rank, world=world, step=step, epoch=start_epoch)
    local = config.batch_size // world
    stopping = False
    wrapped.train()
    state = None
    bus.emit("on_train_begin", here, {"total_steps": total_steps, "start_step": step, "rank": rank})
    for epoch in range(start_epoch, epochs):
        here.epoch = epoch + 1
        bus.emit("on_epoch_begin", here, {"epoch": epoch + 1, "step": step})
        metrics = Metrics(data.task, device)
        batches = data.train.batches(config.batch_size, device, shuffle=True, seed=cfg["seed"], epoch=epoch)
        for group in step_groups(batches, max(1, config.accumulate)):  # one optimizer step per group
            total = sum(batch_len(b) for b in group)  # global samples in this step
            lr = optimizer.param_groups[0]["lr"]
            train_step([take(b, slice(rank * local, (rank + 1) * local)) for b in group], metrics, total=total)
            step = here.step = step + 1
            last = step % steps_per_epoch == 0 or step >= total_steps
            logs = {"step": step, "epoch": epoch + 1, "lr": lr}
            if step % config.log_every == 0 or last:
                sums = metrics.sums()
                dist.all_reduce(sums)  # the global batch's loss and metrics, as one process would log them
                asked = False
                if rank == 0:  # posting the row answers whether Stop was asked for
                    row = {"kind": "train", **logs, "split": "train", **metrics.compute(sums)}
                    row["samples_per_s"] = metrics.samples_in(sums) / max(1e-9, time.perf_counter() - metrics.since)
                    asked = post(row)
                stop = torch.tensor([float(asked)], device=device)
                dist.broadcast(stop, 0)  # every rank stops at the same step
                stopping = bool(stop.item())  # read only at a logging step: no sync in ordinary steps
                metrics = Metrics(data.task, device)
            bus.emit("on_step_end", here, logs)
            if stopping or step >= total_steps:
                break
        # Collectives under FSDP: every rank calls them.
        state = get_model_state_dict(wrapped, options=FULL)
        optimizer_state = get_optimizer_state_dict(wrapped, optimizer, options=FULL)
        if rank == 0 and data.val is not None and len(data.val):
            if plain is not model:
                plain.load_state_dict(state)
            val = evaluate_model(plain, data.val, batch_size=max(256, config.batch_size), device=device,
                                 loss_fn=loss_fn, task=data.task, amp=amp)
            row = {"step": step, "epoch": epoch + 1, "split": "val", **val}
            post({"kind": "val", **row})
            if tracker.update(row, plain):
                post({"kind": "early_stop", "step": step})
        if config.early_stop:  # rank 0 decides; every rank stops after the same epoch
            flag = torch.tensor([float(rank == 0 and tracker.stopped_at is not None)], device=device)
            dist.broadcast(flag, 0)
            stopping = stopping or bool(flag.item())
        # --schedule plateau: rank 0's validation loss, on every rank
        if steps_on_validation(schedule) and data.val is not None and len(data.val):
            val_loss = torch.tensor([val["loss"] if rank == 0 else 0.0], device=device)
            dist.broadcast(val_loss, 0)
            schedule.step(float(val_loss))
        bus.emit("on_epoch_end", here, {"epoch": epoch + 1, "step": step})
        _report(rank, step, epoch + 1, state, optimizer_state, schedule, tracker)
        if stopping or step >= total_steps:
            break
    if state is None:  # restarted after the last epoch's checkpoint: nothing left to train
        state = get_model_state_dict(wrapped, options=FULL)
    bus.emit("on_train_end", here, {"step": step, "status": "stopped" if stopping else "completed"})
    if tracker.weights is not None:  # --early-stop: the best validation's weights, not the last ones
        state = tracker.weights
    return {k: v.cpu().numpy() for k, v in state.items()} if rank == 0 else None  # Ray returns no tensors


@dataclass
class _WorkerState:
    """What a worker-side callback sees as the emitting object: this worker's model, rank and progress."""

    model: torch.nn.Module
    rank: int
    world: int
    step: int
    epoch: int


def _wrap(model, strategy: str, device):
    import ray.train.torch

    if strategy == "ddp":
        return ray.train.torch.prepare_model(model, move_to_device=False)
    from torch.distributed.fsdp import fully_shard

    if device.type == "cuda":
        torch.cuda.set_device(device)  # Ray's prepare_model does this for DDP only
    # One FSDP unit per repeated block (each entry of a ModuleList: a GPT's transformer blocks), then the
    # root, which keeps the rest — embeddings and a tied output layer stay in one unit, so the tie holds.
    sharded: list[str] = []  # bottom-up, as FSDP2 needs: only the outermost lists' blocks
    for name, blocks in model.named_modules():
        if isinstance(blocks, torch.nn.ModuleList) and not any(name.startswith(f"{done}.") for done in sharded):
            for index, block in enumerate(blocks):
                fully_shard(block)
                sharded.append(f"{name}.{index}")
    return fully_shard(model)


def _gradient_sync(wrapped, sync: bool):
    """Skip the all-reduce on all but the last micro-batch of an accumulated step (DDP's no_sync, FSDP2's switch)."""
    if hasattr(wrapped, "set_requires_gradient_sync"):
        wrapped.set_requires_gradient_sync(sync)
    elif not sync and hasattr(wrapped, "no_sync"):
        return wrapped.no_sync()
    return contextlib.nullcontext()


def _report(rank: int, step: int, epoch: int, state: dict, optimizer_state: dict, schedule, tracker) -> None:
    """Each epoch: every rank reports (a barrier); rank 0 attaches the checkpoint a restart resumes from."""
    import ray.train

    if rank != 0:
        ray.train.report({"step": step, "epoch": epoch}, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save({"model": state, "optimizer": optimizer_state, "step": step, "epoch": epoch,
                    "schedule": schedule.state_dict() if schedule is not None else None,
                    "early_stop": tracker.state(), "best": tracker.best, "best_weights": tracker.weights},
                   Path(folder) / "state.pt")
        ray.train.report({"step": step, "epoch": epoch}, checkpoint=ray.train.Checkpoint.from_directory(folder))
