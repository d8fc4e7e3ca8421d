"""The `ray` executor: a recipe's units run as Ray tasks; the driver alone writes the store.

Each unit is one Ray task (`run_unit`) with its resources declared (`num_cpus`, `num_gpus`). The driver
(engine.run.recipes.run_recipe) submits a unit once its inputs have finished, so units that do not depend on
each other (sweep levels, repeats, methods) run side by side on the cluster's workers.

Artifacts travel in one of two ways:
- by default as bytes: a worker writes its checkpoint directory in a temporary directory, returns it as an
  uncompressed tar (its second return value), and the driver unpacks it at the unit's `out`. That object ref
  is kept: every later unit that starts from the checkpoint gets the same ref (the teacher, the distilled
  student are computed once and passed by reference; Ray moves the bytes to each node once).
- with `shared=True` (the user declares the recipe's `out` to be on storage every node mounts at the same
  path): workers read and write the checkpoints there, and nothing but paths moves.
Paths that a worker sees (its temporary directory, or an absolute shared path) are translated back to the
driver's paths in the points and in the checkpoints' JSON files, so a Ray run records exactly what a local
run records.

Live progress: a worker's context buffers its progress, metric rows and events and pushes them to a small
actor (the hub) at most every PROGRESS_INTERVAL_S; the driver drains the actor while it waits and writes
them to the store. Points, artifacts and the end status come back in the task's result (`Outcome` with
recorded=False) and the driver records them.

Cancel: `ray.cancel` (a queued task never starts; a running one gets KeyboardInterrupt, and is killed when
it has not stopped after FORCE_AFTER_S). A task that raises is `failed` with its message; a worker that
dies is `failed` with Ray's reason; the other units go on.

Ray is optional (requirements-ray.txt): nothing here imports it until an executor is made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import math
import os
import re
import shutil
import socket
import tarfile
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.config import Config, fields_with_role
from engine.core.context import RunContext
from engine.core.errors import UserError
from engine.core.point import Point
from engine.methods.tasks import run_task
from engine.model.outputs import MARKER, check_output
from engine.run.executors.base import Executor, Outcome, register_executor
from engine.run.jobs import PROGRESS_INTERVAL_S, device_name, resolve_task

INSTALL_HINT = "pip install -r requirements-ray.txt"
PUSH_TRIES = 4  # a worker's last progress push, tried again while the hub actor is briefly unavailable
FORCE_AFTER_S = 10.0  # a cancelled task still running after this is killed (ray.cancel(force=True))
POLL_S = 0.2  # how often the driver drains progress while it waits
TEMP_PREFIX = "compression-lab-ray-"


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


# ---------------------------------------------------------------- moving checkpoint directories


def pack_dir(directory: str | Path) -> bytes:
    """A directory as an uncompressed tar (weights do not compress)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(directory), arcname=".")
    return buf.getvalue()


def unpack_dir(data: bytes, directory: str | Path) -> None:
    """Unpacks pack_dir's bytes into `directory`; members that would leave it are refused (the "data" filter)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(str(directory), filter="data")


def translate(value: Any, paths: dict[str, str]) -> Any:
    """`value` with every string that is, or lies under, a key of `paths` moved under that key's value."""
    if isinstance(value, str):
        for src in sorted(paths, key=len, reverse=True):
            if value == src or value.startswith(src.rstrip("/") + "/"):
                return paths[src] + value[len(src):]
        return value
    if isinstance(value, dict):
        return {k: translate(v, paths) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(translate(v, paths) for v in value)
    return value


def translate_point(point: Point, paths: dict[str, str]) -> Point:
    return dataclasses.replace(point, input_checkpoint=translate(point.input_checkpoint, paths),
                               artifact=translate(point.artifact, paths), params=translate(point.params, paths),
                               extra=translate(point.extra, paths))


def translate_json_files(directory: str | Path, paths: dict[str, str]) -> None:
    """Rewrites the worker's paths in a checkpoint directory's JSON files (the lineage in meta.json, the
    output marker): a path is replaced where it stands whole or before a '/'."""
    pairs = sorted(((json.dumps(s)[1:-1], json.dumps(d)[1:-1]) for s, d in paths.items() if s != d),
                   key=lambda pair: -len(pair[0]))
    if not pairs:
        return
    pattern = re.compile("|".join(f"{re.escape(src)}(?=[\"/])" for src, _ in pairs))
    to = dict(pairs)
    for f in Path(directory).rglob("*"):
        if f.is_file() and (f.suffix == ".json" or f.name == MARKER):
            text = f.read_text(encoding="utf-8")
            new = pattern.sub(lambda m: to[m.group(0)], text)
            if new != text:
                f.write_text(new, encoding="utf-8")


def install_dir(data: bytes, out: str) -> None:
    """Puts a worker's checkpoint directory at the driver's `out`, replacing only a directory this tool made."""
    target = check_output(out, [], overwrite=True)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        unpack_dir(data, staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def wants_cuda(config: dict) -> bool:
    """Whether a config asks for CUDA (a `device` field set to cuda anywhere in it)."""
    for k, v in config.items():
        if isinstance(v, dict) and wants_cuda(v):
            return True
        if k == "device" and isinstance(v, str) and v.startswith("cuda"):
            return True
    return False


# ---------------------------------------------------------------- the worker side


def _hub_class():
    """The actor that collects workers' progress, metric rows and events, one list per driver-side executor,
    until that executor drains them. Made inside a function, so Ray ships the class by value and its worker
    imports nothing (not torch)."""

    class ProgressHub:
        def __init__(self) -> None:
            self.items: dict[str, list[tuple]] = {}

        def push(self, channel: str, run_id: str, items: list[tuple]) -> None:
            self.items.setdefault(channel, []).extend((run_id, *item) for item in items)

        def drain(self, channel: str) -> list[tuple]:
            return self.items.pop(channel, [])

    return ProgressHub


class WorkerContext(RunContext):
    """What a task sees on a Ray worker: points and artifacts kept for the result; progress, metric rows
    and events pushed to the hub, at most every `interval_s` (and when the message changes), as
    engine.run.jobs.StoreContext writes them."""

    def __init__(self, hub, channel: str, run_id: str, interval_s: float) -> None:
        super().__init__()
        self.hub = hub
        self.channel = channel
        self.run_id = run_id
        self.interval_s = interval_s
        self.artifacts: list[tuple[str, str]] = []
        self._items: list[tuple] = []
        self._latest: tuple | None = None
        self._batch = 0
        self._last_push = -math.inf
        self._last_message: str | None = None

    def progress(self, p) -> None:
        if p.metrics:
            self._batch += 1
            self._items.append(("metrics", {f"batch_{k}": float(v) for k, v in p.metrics.items()}, self._batch))
        self._latest = ("progress", float(p.fraction), p.message, p.eta_s)
        if time.monotonic() - self._last_push >= self.interval_s or p.message != self._last_message \
                or p.fraction >= 1:
            self._last_message = p.message
            self.push()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._items.append(("metrics", {k: float(v) for k, v in metrics.items()}, int(step)))

    def log_event(self, message: str, level: str = "info") -> None:
        self._items.append(("event", str(message), level))
        self.push()

    def log_artifact(self, path: str, kind: str) -> None:
        self.artifacts.append((str(path), kind))

    def push(self, wait: bool = False) -> None:
        items = self._items + ([self._latest] if self._latest is not None else [])
        self._items, self._latest = [], None
        self._last_push = time.monotonic()
        if not items and not wait:
            return
        ref = self.hub.push.remote(self.channel, self.run_id, items)
        if wait:
            import ray

            # the hub can be briefly unavailable on a loaded machine (Ray says: retry); the unit's points travel
            # in its result, so a last push that still cannot land loses log lines, never the unit
            for attempt in range(PUSH_TRIES):
                try:
                    ray.get(ref)
                    return
                except ray.exceptions.ActorUnavailableError:
                    if attempt == PUSH_TRIES - 1:
                        return
                    time.sleep(0.5 * (attempt + 1))
                    ref = self.hub.push.remote(self.channel, self.run_id, items)


def run_unit(task: str, config: dict, run_id: str, hub, plan: dict, *tars: bytes) -> tuple[dict, bytes | None]:
    """The Ray task: runs one unit on a worker and returns (its result, its checkpoint directory as a tar).

    `plan`: out (the driver's path, or None), local_out (shared storage: the absolute path to write),
    shared, threads, channel and interval_s (for the progress hub), and inputs: [{field, path (the
    driver's), root (the driver's path of the directory the tar holds), rel (the input within it), tar
    (index into `tars`, None on shared storage), local (shared storage: the absolute path)}]. A task's own
    error comes back as status failed; a cancel (KeyboardInterrupt from ray.cancel) propagates, and Ray
    reports it.
    """
    import torch

    started = time.perf_counter()
    torch.set_num_threads(plan["threads"])
    ctx = WorkerContext(hub, plan["channel"], run_id, plan["interval_s"])
    shared = plan["shared"]
    root = None if shared else Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    paths: dict[str, str] = {}  # what the worker sees -> what the driver records
    config = dict(config)
    local_out = None
    error = tb = None
    try:
        ctx.log_event(f"started {task} on {device_name()} (Ray worker on {socket.gethostname()}, "
                      f"pid {os.getpid()})")
        try:
            for i, spec in enumerate(plan["inputs"]):
                if spec["tar"] is None:
                    local = spec["local"]
                    paths[local] = spec["path"]
                else:
                    base = root / "in" / str(i)
                    unpack_dir(tars[spec["tar"]], base)
                    paths[str(base)] = spec["root"]
                    local = str(base if spec["rel"] == "." else base / spec["rel"])
                config[spec["field"]] = local
            if plan["out"]:
                local_out = plan["local_out"] if shared else str(root / "out")
                paths[local_out] = plan["out"]
                config["out"] = local_out
            _, cfg = resolve_task(task, config)
            points = run_task(task, cfg, ctx)
            status = "finished"
        except Exception as e:  # noqa: BLE001 - the unit fails with its message; the driver goes on
            points = list(ctx.points)
            status = "failed"
            error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
            tb = traceback.format_exc()
            ctx.log_event(f"failed: {error}", "error")
        data = None
        if status == "finished" and local_out and Path(local_out).is_dir():
            translate_json_files(local_out, paths)
            if not shared:
                data = pack_dir(local_out)
        if status == "finished":
            ctx.log_event(f"finished: {len(points)} point(s) in {time.perf_counter() - started:.1f} s")
        ctx.push(wait=True)
        result = {"status": status, "error": error, "traceback": tb,
                  "points": [translate_point(p, paths) for p in points],
                  "artifacts": [(translate(p, paths), kind) for p, kind in ctx.artifacts],
                  "seconds": time.perf_counter() - started}
        return result, data
    finally:
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- the driver side


def connect(address: str | None = None) -> None:
    """Joins the Ray cluster at `address` (auto, ray://HOST:PORT, HOST:PORT), or starts a local Ray when
    None (the cluster in $RAY_ADDRESS when that is set), unless this process is already connected. A
    cluster gets this checkout's engine/ and store/ packages with the job (runtime_env py_modules), so its
    workers run the same code as the driver."""
    with _LOCK:  # the app's job runner may start two recipes at once
        _connect(address)


def _connect(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    here = Path(__file__).resolve().parent
    # "local": a new local Ray even where a stale `ray start` left its address behind ($RAY_ADDRESS wins)
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address != "local":
        kwargs["runtime_env"] = {"py_modules": [str(here), str(here.parent / "store")],
                                 "excludes": ["__pycache__", "*.pyc"]}
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError: one message for all
        where = "a local Ray instance" if address == "local" else f"the Ray cluster at {address}"
        raise UserError(f"cannot reach {where}: {type(e).__name__}: {str(e).strip().rstrip('.')}. Start one with "
                        f"`ray start --head` and pass --ray-address auto (on a node of the cluster) or "
                        f"ray://HEAD:10001 (from elsewhere)") from None


_REMOTE: dict[str, Any] = {}
_LOCK = threading.Lock()


def _remote(name: str):
    """The Ray task function, or the progress hub: one per process and Ray connection (an actor costs a
    worker process), in which each executor has its own channel."""
    import ray

    with _LOCK:
        if "run_unit" not in _REMOTE:
            # max_retries=0: a unit whose worker dies is failed (re-running the recipe runs it again)
            _REMOTE["run_unit"] = ray.remote(max_retries=0, num_returns=2)(run_unit)
        job = ray.get_runtime_context().get_job_id()
        if name == "hub" and _REMOTE.get("hub_job") != job:  # first use, or a new ray.init since
            _REMOTE["hub"] = ray.remote(num_cpus=0)(_hub_class()).remote()
            _REMOTE["hub_job"] = job
        return _REMOTE[name]


@dataclass(eq=False)
class _RayHandle:
    run_id: str
    ref: Any  # the result
    tar_ref: Any  # the checkpoint directory's bytes (None in the result when nothing was saved)
    out: str | None  # the driver's path of the unit's checkpoint directory
    cancelled_at: float | None = None
    reason: str | None = None
    forced: bool = False
    held: list = field(default_factory=list)  # input refs kept alive while the task runs
    ended: Outcome | None = None  # an outcome known at submit (its input could not be sent)


@register_executor("ray")
class RayExecutor(Executor):
    """Units run as Ray tasks (see the module's docstring); the driver records their outcomes."""

    records_live = False

    @classmethod
    def check_available(cls) -> None:
        if not ray_installed():
            raise UserError(f"the ray executor needs Ray, an optional dependency: {INSTALL_HINT} "
                            f"(or run the recipe with --executor local)")

    def __init__(self, store, workers: int = 1, *, address: str | None = None, cpus: float = 1.0,
                 gpus: float = 0.0, shared: bool = False) -> None:
        self.check_available()
        import ray

        connect(address)
        self.ray = ray
        self.store = store
        self.cpus, self.gpus, self.shared = cpus, gpus, shared
        self.interval_s = PROGRESS_INTERVAL_S
        self._hub = _remote("hub")
        self._channel = uuid.uuid4().hex
        # the checkpoint directories this executor's units made: resolved path -> (its tar's ref, the path given)
        self._produced: dict[Path, tuple[Any, str]] = {}
        self._put: dict[Path, Any] = {}  # input directories from elsewhere, put in the object store once
        self._active: set[str] = set()
        self._cluster_gpus = ray.cluster_resources().get("GPU", 0) > 0

    # ------------------------------------------------------------ submit

    def _input(self, path: str) -> tuple[Any, str, str]:
        """(the object ref of a tar, the driver's path of the directory it holds, the input's path within it)."""
        p = Path(path).expanduser().resolve()
        for root, (ref, given) in self._produced.items():
            if p == root or root in p.parents:
                return ref, given, "." if p == root else str(p.relative_to(root))
        if p not in self._put:
            if not p.is_dir():
                raise UserError(f"the input checkpoint {path} does not exist on the driver")
            self._put[p] = self.ray.put(pack_dir(p))
        return self._put[p], path, "."

    def submit(self, unit, config: Config, run_id: str) -> _RayHandle:
        d = config.to_dict()
        inputs, tar_refs = [], []
        for name in sorted(fields_with_role(type(config), "input")):  # the fields naming an input checkpoint
            value = d.get(name)
            if not isinstance(value, str) or not value:
                continue
            if self.shared:
                inputs.append({"field": name, "path": value, "local": str(Path(value).expanduser().resolve()),
                               "tar": None})
                continue
            try:
                ref, root, rel = self._input(value)
            except (UserError, OSError) as e:
                handle = _RayHandle(run_id, None, None, None)
                handle.ended = Outcome(handle, run_id, "failed", error=f"its {name} could not be sent: {e}",
                                       recorded=False)
                return handle
            inputs.append({"field": name, "path": value, "root": root, "rel": rel, "tar": len(tar_refs)})
            tar_refs.append(ref)
        out = d.get("out") if d.get("save", False) and d.get("out") else None
        plan = {"inputs": inputs, "out": out, "shared": self.shared, "interval_s": self.interval_s,
                "channel": self._channel,
                "local_out": str(Path(out).expanduser().resolve()) if out and self.shared else None,
                "threads": max(1, int(self.cpus))}
        gpus = max(self.gpus, 1.0) if wants_cuda(d) else self.gpus
        options: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": gpus, "name": f"{unit.task} {run_id}"}
        if not gpus and self._cluster_gpus:  # a CPU unit on a GPU node must not take a GPU it did not declare
            options["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
        ref, tar_ref = _remote("run_unit").options(**options).remote(unit.task, d, run_id, self._hub, plan,
                                                                      *tar_refs)
        self._active.add(run_id)
        self.store.set_progress(run_id, 0.0, "waiting for a Ray worker")
        return _RayHandle(run_id, ref, tar_ref, out, held=tar_refs)

    # ------------------------------------------------------------ wait: drain progress, collect outcomes

    def _drain(self) -> None:
        try:
            items = self.ray.get(self._hub.drain.remote(self._channel), timeout=30)
        except Exception:  # noqa: BLE001 - progress is best effort; outcomes still arrive
            return
        for run_id, kind, *rest in items:
            if run_id not in self._active:
                continue
            if kind == "progress":
                self.store.set_progress(run_id, *rest)
            elif kind == "metrics":
                self.store.log_metrics(run_id, rest[0], step=rest[1])
            elif kind == "event":
                self.store.log_event(run_id, rest[0], rest[1])

    def _escalate(self, handles: list[_RayHandle]) -> None:
        now = time.monotonic()
        for h in handles:
            if h.cancelled_at is not None and not h.forced and now - h.cancelled_at > FORCE_AFTER_S:
                h.forced = True
                self.ray.cancel(h.ref, force=True)

    def wait(self, handles: list, timeout: float | None = None) -> list[Outcome]:
        ended = [h.ended for h in handles if h.ended is not None]
        if ended or not handles:
            return ended
        deadline = None if timeout is None else time.monotonic() + timeout
        by_ref = {h.ref: h for h in handles}
        while True:
            self._drain()
            self._escalate(handles)
            left = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
            ready, _ = self.ray.wait(list(by_ref), num_returns=1, timeout=left, fetch_local=False)
            if ready:
                ready, _ = self.ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0, fetch_local=False)
                self._drain()  # a worker's last push is in before its result
                return [self._outcome(by_ref[r]) for r in ready]
            if deadline is not None and time.monotonic() >= deadline:
                return []

    def _outcome(self, h: _RayHandle) -> Outcome:
        ray = self.ray
        self._active.discard(h.run_id)
        h.held = []
        stopped = "interrupted" if h.reason else "cancelled"
        try:
            result = ray.get(h.ref)
        except ray.exceptions.RayError as e:  # cancelled, or the worker (or its node) died
            with contextlib.suppress(Exception):  # the same error, read so Ray does not print it as unhandled
                ray.get(h.tar_ref, timeout=5)
            if h.cancelled_at is not None:
                why = f"interrupted: {h.reason}" if h.reason else "cancelled by the user"
                self.store.log_event(h.run_id, why, "warning")
                return Outcome(h, h.run_id, stopped, error=why, recorded=False)
            error = f"the Ray worker running it failed: {_ray_reason(e)}"
            self.store.log_event(h.run_id, f"failed: {error}", "error")
            return Outcome(h, h.run_id, "failed", error=error, recorded=False)
        status, error = result["status"], result["error"]
        if status == "finished" and h.out:
            try:
                if self.shared:
                    if not Path(h.out).is_dir():
                        raise UserError(f"the worker wrote {h.out} on storage declared shared, but the driver "
                                        f"does not see it there: is it mounted at the same path on every node?")
                else:
                    data = ray.get(h.tar_ref)
                    if data is not None:
                        install_dir(data, h.out)
                        self._produced[Path(h.out).expanduser().resolve()] = (h.tar_ref, h.out)
            except Exception as e:  # noqa: BLE001 - this unit fails; the others go on
                status, error = "failed", f"its checkpoint could not be put at {h.out}: {e}"
                self.store.log_event(h.run_id, f"failed: {error}", "error")
        artifacts = list(dict.fromkeys(path for path, _ in result["artifacts"]))
        return Outcome(h, h.run_id, status, list(result["points"]), artifacts if status == "finished" else [],
                       error=error, recorded=False, traceback=result["traceback"])

    # ------------------------------------------------------------ cancel, shutdown

    def cancel(self, handle: _RayHandle, reason: str | None = None) -> None:
        if handle.cancelled_at is None and handle.ended is None:
            handle.cancelled_at = time.monotonic()
            handle.reason = reason
            self.ray.cancel(handle.ref)

    def run_id(self, handle: _RayHandle) -> str:
        return handle.run_id

    def shutdown(self) -> None:
        """Lets go of the checkpoints kept for later units and of this executor's progress channel; the Ray
        connection and the hub stay (a process's later recipes reuse them; Ray ends them with the process)."""
        self._produced.clear()
        self._put.clear()
        with contextlib.suppress(Exception):  # the cluster may be gone already
            self._hub.drain.remote(self._channel)


def _ray_reason(e: Exception) -> str:
    """Ray's error in one line (its messages carry the remote traceback and advice after the first lines)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else ""
    return f"{type(e).__name__}: {text}"[:500]
