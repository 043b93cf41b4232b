"""Metaflow glue shared by the flows: checkpoint folders that survive ``@retry`` and ``resume``.

A training step passes ``checkpoint_dir=checkpoint_root(self)`` to the pipeline function; each
model it trains checkpoints every epoch under ``<root>/<method or shard key>``
(:func:`recsys.pipeline.checkpoints.task_checkpoints`), the training loop resumes from the newest
valid checkpoint there, and a finished model's folder is deleted. The root is

    <checkpoint base>/<flow name>/<lineage run id>/<step name>

* checkpoint base: ``$RECSYS_CHECKPOINT_ROOT`` (a shared volume in the cloud), else
  ``<output root>/checkpoints`` with output root = the flow's ``--output-dir`` or
  :func:`recsys.pipeline.preprocess.default_output_root` (``$RECSYS_OUTPUT_DIR`` or ``./outputs``);
* lineage run id: the run id of a fresh run; for ``python flow.py resume`` (a new run id) the run
  it resumes (``current.origin_run_id``), followed back through resumes of resumes to the first run.

So every ``@retry`` attempt of a step and every ``resume`` of the run see the same folder: on one
machine or on a shared volume that is all a retry needs.

Optional, for retries on another machine without a shared volume: with the ``metaflow-checkpoint``
extension installed (not a dependency; Metaflow then ships it in the code package) and
``RECSYS_METAFLOW_CHECKPOINT=1``, :func:`checkpointed` puts ``@checkpoint(load_policy="fresh",
show_card=False)`` and an ``@environment`` carrying the switch on the training steps. Each epoch
checkpoint the loop writes is then also saved through ``current.checkpoint`` (to the datastore:
S3 / GS / Azure in the cloud). A retried task gets its previous attempt's newest one back
(``fresh``); a task of a resumed run looks up the newest one of the same step and foreach value in
the runs it resumes (``fresh`` loads nothing there, and ``eager`` would load the newest of *any*
earlier run of the step, e.g. a later unrelated one). Either is copied into the root before training.

This module imports ``recsys`` (and so torch) only inside functions: the flow files import it at
the top, and Metaflow packages it with them (it sits next to them in ``flows/``).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Callable, Optional

from metaflow import current

ENV_ROOT = "RECSYS_CHECKPOINT_ROOT"
ENV_METAFLOW_CHECKPOINT = "RECSYS_METAFLOW_CHECKPOINT"
# tests only: "E0,E1,...": SIGKILL attempt i of a training task right after the loop wrote the
# checkpoint of epoch Ei ("2": the first attempt dies after epoch 2, the retry goes on); with
# RECSYS_TEST_WIPE_CHECKPOINTS=1 the step's local folder is deleted first (a retry on another machine)
ENV_TEST_KILL = "RECSYS_TEST_KILL_AT_CHECKPOINT"
ENV_TEST_WIPE = "RECSYS_TEST_WIPE_CHECKPOINTS"
METAFLOW_CHECKPOINT_NAME = "recsys"
_MAX_LINEAGE = 100

# called as fn(path, epoch) after each checkpoint file the training loop writes in this process
_listeners: list[Callable[[Path, int], None]] = []
_warned: list[bool] = []


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


# ---- the folder ---------------------------------------------------------------------------------

def checkpoint_base(output_dir: str = "") -> Path:
    """Where all flows' checkpoint folders live: ``$RECSYS_CHECKPOINT_ROOT``, else
    ``<output_dir or default output root>/checkpoints`` (absolute)."""
    base = os.environ.get(ENV_ROOT)
    if base:
        return Path(base).absolute()
    if output_dir:
        return (Path(output_dir) / "checkpoints").absolute()
    from recsys.pipeline.preprocess import default_output_root

    return (Path(default_output_root()) / "checkpoints").absolute()


def lineage(flow_name: str, run_id: str, origin_run_id: Optional[str],
            origin_of: Optional[Callable[[str, str], Optional[str]]] = None) -> list[str]:
    """``[run_id, origin, origin's origin, ...]``: the run and the runs it resumes, newest first.

    `origin_of(flow_name, run_id)` tells which run a run resumed (None for a fresh one); the
    default asks Metaflow's metadata. A lookup that fails ends the chain there."""
    chain = [str(run_id)]
    if not origin_run_id:
        return chain
    origin_of = origin_of or _origin_of
    rid: Optional[str] = str(origin_run_id)
    while rid and rid not in chain and len(chain) < _MAX_LINEAGE:
        chain.append(rid)
        try:
            rid = origin_of(flow_name, rid)
        except Exception:  # noqa: BLE001 - metadata unreachable: stop at the last known run
            rid = None
    return chain


def _origin_of(flow_name: str, run_id: str) -> Optional[str]:
    """The run that `run_id` resumed, from the origin-run-id metadata Metaflow records on its tasks."""
    from metaflow import Run

    start = Run(f"{flow_name}/{run_id}", _namespace_check=False)["start"].task
    value = start.metadata_dict.get("origin-run-id")
    return None if value in (None, "", "None") else str(value)


def checkpoint_root(flow=None, *, step_name: Optional[str] = None) -> Path:
    """The checkpoint folder of the running step (see the module docstring), created.

    Call it once at the top of a training step. Besides returning the folder it restores a
    checkpoint handed back by ``@checkpoint`` (when the step has one), has each new loop checkpoint
    saved through ``current.checkpoint`` too, and shows the loop's ``recsys.training`` log lines
    (resumes, unusable checkpoints) in the task's log."""
    chain = lineage(current.flow_name, current.run_id, current.origin_run_id)
    root = checkpoint_base(_output_dir(flow)) / current.flow_name / chain[-1] / (step_name or current.step_name)
    root.mkdir(parents=True, exist_ok=True)
    _show_training_log()
    _listeners.clear()  # one training step per process; a second call replaces the first's
    checkpointer = current.get("checkpoint")
    if checkpointer is not None:
        try:
            _restore_from_metaflow(checkpointer, root, chain)
        except Exception as exc:  # noqa: BLE001 - train from what the local folder has
            _say(f"restoring from @checkpoint failed ({type(exc).__name__}: {exc}); using the local folder only")
        _listeners.append(functools.partial(_save_to_metaflow, checkpointer, root))
    kill_at = [int(e) for e in (os.environ.get(ENV_TEST_KILL) or "").split(",") if e.strip()]
    if current.retry_count < len(kill_at):
        _listeners.append(functools.partial(_kill_after, kill_at[current.retry_count], root))
    if _listeners:
        _install_loop_hook()
    return root


def prune_checkpoints(flow=None) -> None:
    """Remove the run's empty checkpoint folders (finished models delete their own); call it in a
    step after all training steps, e.g. the join. Folders still holding checkpoints stay."""
    chain = lineage(current.flow_name, current.run_id, current.origin_run_id)
    top = checkpoint_base(_output_dir(flow)) / current.flow_name / chain[-1]
    if not top.is_dir():
        return
    for folder, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
        try:
            os.rmdir(folder)
        except OSError:
            pass  # not empty


def _output_dir(flow) -> str:
    """The flow's ``--output-dir`` (every flow here has one; "" when not given)."""
    return str(getattr(flow, "output_dir", "") or "") if flow is not None else ""


def _show_training_log() -> None:
    """The loop logs resumes and skipped checkpoints at INFO / WARNING on ``recsys.training``;
    without a handler Python would drop the INFO lines."""
    logger = logging.getLogger("recsys.training")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


# ---- the loop hook ------------------------------------------------------------------------------

def _install_loop_hook() -> None:
    """Call this module's listeners after each checkpoint the loop writes (once per process)."""
    global _HOOKED
    if _HOOKED:
        return
    from recsys.training.checkpoints import add_checkpoint_listener

    add_checkpoint_listener(lambda path, epoch: [listener(Path(path), epoch) for listener in list(_listeners)])
    _HOOKED = True


_HOOKED = False


def _kill_after(epoch: int, root: Path, path: Path, written: int) -> None:
    if written == epoch:
        if _truthy(os.environ.get(ENV_TEST_WIPE)):
            shutil.rmtree(root, ignore_errors=True)
        print(f"{ENV_TEST_KILL}: killing the task after the checkpoint of epoch {written} ({path})",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


# ---- optional metaflow-checkpoint ---------------------------------------------------------------

def checkpointed(step_func):
    """Step decorator: when ``RECSYS_METAFLOW_CHECKPOINT=1`` and the metaflow-checkpoint extension
    is installed, ``@checkpoint(load_policy="fresh", show_card=False)`` plus
    ``@environment(vars={"RECSYS_METAFLOW_CHECKPOINT": "1"})`` (a remote task re-imports the flow
    and must see the switch too, or it would have no @checkpoint); else the step unchanged. Put it
    between ``@retry`` and ``@step``. (``--with checkpoint`` on the command line does not work with
    metaflow 2.19 / metaflow-checkpoint 0.2.14: the task gets ``show_card`` as a string and fails.)"""
    if not _truthy(os.environ.get(ENV_METAFLOW_CHECKPOINT)):
        return step_func
    try:
        from metaflow import checkpoint, environment
    except ImportError:
        if not _warned:
            _warned.append(True)
            print(f"{ENV_METAFLOW_CHECKPOINT} is set but the metaflow-checkpoint extension is not installed; "
                  f"checkpoints stay in local folders ({ENV_ROOT} or the output folder)", file=sys.stderr)
        return step_func
    step_func = checkpoint(load_policy="fresh", show_card=False)(step_func)
    return environment(vars={ENV_METAFLOW_CHECKPOINT: "1"})(step_func)


def stage_settings(flow, stage, **overrides) -> dict:
    """A training flow's settings: its ``--config cfg`` with ``--data-path / --columns / --sep``
    merged in (and `overrides` on top), through the stage's ``load_settings`` (an unknown dataset,
    key or value stops here, before any data is read)."""
    from recsys.pipeline.settings import with_data_options

    override = with_data_options(flow.cfg, flow.data_path, flow.columns, flow.sep)
    override.update(overrides)
    return stage.load_settings(flow.dataset, override)


def run_provenance(flow) -> dict:
    """The provenance record of a finished run (:func:`recsys.pipeline.provenance.provenance`): the
    run's pathspec, the run it resumed (``resume``), its dataset and split, wall seconds since start."""
    import time

    from recsys.pipeline.provenance import provenance

    started = getattr(flow, "started_at", None)
    return provenance(dataset=getattr(flow, "dataset", None), split_path=getattr(flow, "split_path", None),
                      split_sha256=getattr(flow, "split_sha256", None), run=current.pathspec.rsplit("/", 2)[0]
                      if current.pathspec else None, resumed_from=current.origin_run_id,
                      wall_seconds=round(time.time() - started, 1) if started else None)


def stage_split(flow, stage, settings):
    """The run folder and the stage's split, kept as the flow's artifacts ``run_dir``,
    ``split_path``, ``split_sha256`` and ``stats``; returns the prepared split."""
    import time

    flow.started_at = time.time()
    flow.run_dir = os.path.abspath(flow.output_dir or str(stage.default_run_dir(flow.dataset, current.run_id)))
    prepared = stage.prepare(flow.dataset, settings, data_dir=flow.data_dir or None,
                             output_dir=os.path.join(flow.run_dir, "split"))
    flow.split_path, flow.split_sha256, flow.stats = str(prepared.path), prepared.sha256, prepared.stats
    return prepared


def training_step(*, gpu=1, memory: int = 16000, cpu: int = 4, retries: int = 1):
    """The decorators of every training step, in their order: ``@retry(times=retries)``,
    :func:`checkpointed`, ``@resources(gpu=..., memory=..., cpu=...)``, ``@step`` (the code picks
    CUDA when the machine has it and runs on the CPU otherwise)."""
    from metaflow import resources, retry, step

    def wrap(func):
        return retry(times=retries)(checkpointed(resources(gpu=gpu, memory=memory, cpu=cpu)(step(func))))

    return wrap


def _save_to_metaflow(checkpointer, root: Path, path: Path, epoch: int) -> None:
    """Save the model folder ``root/<key>`` that holds the new checkpoint through @checkpoint."""
    try:
        key = Path(path).resolve().relative_to(root.resolve()).parts[0]
    except ValueError:
        return  # a checkpoint outside this step's root
    try:
        checkpointer.save(path=str(root / key), name=METAFLOW_CHECKPOINT_NAME,
                          metadata={"key": key, "epoch": int(epoch)})
    except Exception as exc:  # noqa: BLE001 - the local checkpoint is there; go on training
        _say(f"saving checkpoint {path} through @checkpoint failed ({type(exc).__name__}: {exc}); "
             f"the local copy stays")


def _restore_from_metaflow(checkpointer, root: Path, chain: list[str]) -> Optional[Path]:
    """Copy a checkpoint saved through @checkpoint into ``root/<key>``: the one ``fresh`` loaded
    (an earlier attempt of this task), else, in a resumed run, the newest one of the same step and
    foreach value in the runs it resumes. Only files the folder lacks are copied (a local file of
    the same name is the same atomic write, and the loop takes the newest valid epoch)."""
    ref = None
    if checkpointer.is_loaded:
        ref = _as_dict(checkpointer.info)
        source = Path(checkpointer.directory)
        if ref.get("name") != METAFLOW_CHECKPOINT_NAME or _run_of(ref) not in chain:
            ref = None
    if ref is None and len(chain) > 1:
        ref = _origin_checkpoint(checkpointer, chain[1:])
        if ref is not None:
            checkpointer.load(ref)
            source = Path(checkpointer.directory)
    if ref is None:
        return None
    key = (ref.get("metadata") or {}).get("key")
    if not key:
        return None
    target = root / key
    copied = 0
    for folder, _, files in os.walk(source):
        dest = target / Path(folder).relative_to(source)
        dest.mkdir(parents=True, exist_ok=True)
        for name in files:
            if not (dest / name).exists():
                shutil.copy2(Path(folder) / name, dest / name)
                copied += 1
    _say(f"restored @checkpoint of {ref.get('pathspec')} attempt {ref.get('attempt')} "
         f"(epoch {(ref.get('metadata') or {}).get('epoch')}) into {target}: {copied} new file(s)")
    return target


def _origin_checkpoint(checkpointer, runs: list[str]) -> Optional[dict]:
    """The newest recsys checkpoint that this step's task for the same foreach value saved in the
    first of `runs` that has one. (``list(full_namespace=True)`` lists the checkpoints of this step
    and foreach value in every run of the namespace; matching by task or foreach index instead
    fails for a killed task, which leaves no artifacts.)"""
    try:
        refs = [_as_dict(r) for r in checkpointer.list(name=METAFLOW_CHECKPOINT_NAME, full_namespace=True)]
    except Exception as exc:  # noqa: BLE001 - nothing to resume from; train from the local folder
        _say(f"listing @checkpoint checkpoints failed ({type(exc).__name__}: {exc})")
        return None
    for rid in runs:
        mine = [r for r in refs if _run_of(r) == rid]
        if mine:
            return max(mine, key=lambda r: str(r.get("created_on")))
    return None


def _run_of(ref: dict) -> Optional[str]:
    parts = str(ref.get("pathspec") or "").split("/")
    return parts[1] if len(parts) >= 2 else None


def _as_dict(ref) -> dict:
    return ref.to_dict() if hasattr(ref, "to_dict") else dict(ref)


def _say(message: str) -> None:
    print(f"[flow_support] {message}", file=sys.stderr, flush=True)


# ---- errors that end with the message -------------------------------------------------------------

ENV_ERROR_FILE = "RECSYS_ERROR_FILE"
ENV_DEBUG = "RECSYS_DEBUG"


def _step_error_class():
    from metaflow.exception import MetaflowException

    class RecsysInputError(MetaflowException):
        """Metaflow prints a MetaflowException as its headline and message, without a traceback."""

        headline = "recsys"

    return RecsysInputError


def _guard(fn):
    """Turn one of our errors (bad settings, data, names: RecsysError) raised by a step into a
    one-line report: no traceback in the task log (unless RECSYS_DEBUG=1), and the message kept in
    the run's error file so :func:`main` can print it as the last line."""
    @functools.wraps(fn)
    def step(*args, **kwargs):
        from recsys.errors import RecsysError

        if args:
            _size_threads(args[0])
        try:
            return fn(*args, **kwargs)
        except RecsysError as exc:
            if os.environ.get(ENV_DEBUG) == "1":
                raise
            message = f"{type(exc).__name__}: {exc}"
            path = os.environ.get(ENV_ERROR_FILE)
            if path:
                try:
                    Path(path).write_text(message + "\n")
                except OSError:
                    pass
            raise _step_error_class()(message) from None
    return step


def full_speed(argv: list[str]) -> None:
    """Run at full speed on a small machine whether or not ``--max-workers`` is given.

    * OpenMP threads wait passively (spin-waiting threads of parallel tasks stall each other: the
      main job took 6 min 33 s instead of 2 min 20 s on 2 cores);
    * a local ``run`` / ``resume`` without ``--max-workers`` runs at most as many tasks at once as
      the machine has cores (Metaflow's default is 16);
    * each task gets ``cores // max-workers`` torch threads (at least 1), so the tasks side by side
      share the cores instead of oversubscribing them, and a step that runs alone keeps them all
      (:func:`_size_threads`). An explicit ``OMP_NUM_THREADS`` wins.
    Remote steps (``--with kubernetes`` / ``batch``) size themselves in their own containers."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    command = next((i for i, a in enumerate(argv[1:], 1) if a in ("run", "resume")), None)
    if command is not None and "step" not in argv[1:command]:
        workers = None
        for i, a in enumerate(argv):
            if a == "--max-workers" and i + 1 < len(argv):
                workers = argv[i + 1]
            elif a.startswith("--max-workers="):
                workers = a.split("=", 1)[1]
        if workers is None:
            workers = str(cores)
            argv[command + 1:command + 1] = ["--max-workers", workers]
        os.environ.setdefault("RECSYS_MAX_WORKERS", workers)


def _size_threads(flow) -> None:
    """In a task: a foreach branch shares the cores with up to max-workers siblings, so it takes
    ``cores // max-workers`` threads; a step that runs alone keeps them all. Set before torch loads
    (the steps import it), or through torch when it already has."""
    if "OMP_NUM_THREADS" in os.environ or not os.environ.get("RECSYS_MAX_WORKERS"):
        return
    try:
        in_foreach = flow.index is not None
        workers = int(os.environ["RECSYS_MAX_WORKERS"])
    except Exception:  # noqa: BLE001 - not in a foreach / an odd value: leave torch's default
        return
    if not in_foreach or workers <= 1:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def default_user() -> None:
    """Metaflow refuses to run as ``root`` or without a user name: name the user ``recsys`` then, so
    every command of the README (``run``, ``resume``, ``card get``) works as written on a root shell."""
    names = [os.environ.get(k) for k in ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER")]
    if all(n in (None, "", "root") for n in names):
        # USERNAME: Metaflow reads it when it asks for the user (METAFLOW_USER only at import)
        os.environ["USERNAME"] = os.environ["METAFLOW_USER"] = "recsys"


def main(flow_class) -> None:
    """Run a flow from its ``__main__`` block so that a bad input ends with our message.

    Every step is guarded (:func:`_guard`); the launching process gives its tasks an error file,
    and after Metaflow's own closing lines it prints ``error: <message>`` and exits non-zero.
    ``RECSYS_DEBUG=1`` keeps the full tracebacks."""
    for name, fn in list(vars(flow_class).items()):
        if callable(fn) and getattr(fn, "is_step", False):
            setattr(flow_class, name, _guard(fn))
    full_speed(sys.argv)
    default_user()
    owner = ENV_ERROR_FILE not in os.environ
    if owner:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="recsys-error-", suffix=".txt")
        os.close(fd)
        os.unlink(path)
        os.environ[ENV_ERROR_FILE] = path
    path = Path(os.environ[ENV_ERROR_FILE])
    try:
        flow_class()
    except SystemExit as exc:
        if owner and exc.code not in (0, None) and path.exists():
            print(f"\nerror: {path.read_text().strip()}", file=sys.stderr, flush=True)
        raise
    finally:
        if owner:
            path.unlink(missing_ok=True)


def torchrun_compat() -> None:
    """Make metaflow-torchrun 0.2.2's ``@torchrun`` work on current Metaflow (2.16+).

    Its decorator overrides ``ParallelDecorator.task_pre_step`` without calling it, so the
    parallel bookkeeping newer Metaflow sets there (``input_paths``, the world-size metadata) is
    missing and every ``@torchrun`` task fails with ``AttributeError: ... 'input_paths'``. Called at
    import of a flow file, so it applies in every task process; a no-op when the package is absent
    or already fixed.

    Also puts this interpreter's folder first on PATH: a local ``num_parallel`` run starts its
    worker nodes as ``python ...`` (Metaflow's default environment), which must be the Python that
    has Metaflow and recsys, not whatever ``python`` the shell finds first."""
    bindir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    try:
        from metaflow.plugins.parallel_decorator import ParallelDecorator
        from metaflow_extensions.torchrun.plugins.torchrun_libs import datastore as tr_datastore
        from metaflow_extensions.torchrun.plugins.torchrun_libs.constants import TORCHRUN_SUFFIX
        from metaflow_extensions.torchrun.plugins.torchrun_libs.torchrun_decorator import TorchrunDecoratorParallel
    except ImportError:
        return
    # Its node barrier keeps keys in the datastore and knows only S3 / Azure / GS; the local
    # datastore takes the same root-relative keys as S3, so a local run (and our CPU test) works.
    store = tr_datastore.TorchrunDatastore
    cloud_root = store.get_storage_root
    if not getattr(cloud_root, "recsys_compat", False):
        def get_storage_root(self):
            return TORCHRUN_SUFFIX if self._backend.TYPE == "local" else cloud_root.fget(self)

        get_storage_root.recsys_compat = True
        store.get_storage_root = property(get_storage_root)
    own = TorchrunDecoratorParallel.task_pre_step
    if own is ParallelDecorator.task_pre_step or getattr(own, "recsys_compat", False):
        return

    def task_pre_step(self, *args, **kwargs):
        ParallelDecorator.task_pre_step(self, *args, **kwargs)
        return own(self, *args, **kwargs)

    task_pre_step.recsys_compat = True
    TorchrunDecoratorParallel.task_pre_step = task_pre_step
