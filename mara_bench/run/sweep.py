"""Sweeps: a YAML grid of runs, each an independent submitit job writing its own results folder.

Sweep file keys (every key optional; an omitted key takes the run's default, a scalar means a one-item list)::

    backbones: [mace, nequip]        # -> RunConfig.backbone
    variants:  [off, paper, control] # -> RunConfig.mara ('on' = paper)
    datasets:  [rmd17:aspirin]
    splits:    [1, 2]
    seeds:     [0, 1, 2]
    presets:   [quick]
    overrides: {train.max_epochs: 50}     # one mapping for every run, or a list of mappings (a grid axis)
    device: cuda                      # any other RunConfig field, applied to every run
    setup: [my_pkg.plugins:register]  # callables run in each job first (in-process plugin registration)

Completed runs (``metrics.json`` present) are skipped; a run killed mid-way resumes from its ``checkpoint.pt``
when resubmitted (the pipeline resumes by itself). Every job records its state in
``<run>/sweep_status.json`` so that ``sweep --status`` reads the results folders alone.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any

import submitit

from ..atomic import atomic_write_json, read_json
from ..errors import UserError, did_you_mean
from .layout import CHECKPOINT, is_complete

AXES = {"backbones": "backbone", "variants": "mara", "datasets": "dataset", "splits": "split", "seeds": "seed",
        "presets": "preset"}
STATUS_FILE = "sweep_status.json"
STALE_S = 1800.0  # a 'running' job on another host whose folder has not changed for this long is 'failed (stale)'


# ------------------------------------------------------------------------------------------- the grid
def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"sweep file '{p}' not found; pass a YAML file (see docs/scale.md)")
    from ..errors import yaml_error_line

    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"sweep file '{p}' is not valid YAML ({yaml_error_line(e)})") from None
    if doc is None:
        raise UserError(f"sweep file '{p}' is empty; list at least one key, e.g. 'backbones: [mace]' "
                        "(see README, Sweeps)")
    if not isinstance(doc, dict):
        raise UserError(f"sweep file '{p}' must hold a mapping of keys (backbones, variants, ...)")
    return doc


def expand(doc: dict[str, Any], where: str = "sweep file", output_dir: str | None = None) -> list:
    """All RunConfigs of a sweep (validated, duplicates removed, in grid order)."""
    from ..config import RunConfig
    from ..registry import backbone_entries

    fields = set(RunConfig.__dataclass_fields__)
    extra = {k: v for k, v in doc.items() if k not in AXES and k not in ("overrides", "setup")}
    for k in extra:
        if k not in fields or k in AXES.values() or k == "overrides":
            valid = sorted(set(AXES) | {"overrides", "setup"} | (fields - set(AXES.values()) - {"overrides"}))
            raise UserError(f"{where}: unknown key '{k}'{did_you_mean(k, valid)}; valid keys: {', '.join(valid)}")
    if output_dir is not None:
        extra["output_dir"] = output_dir
    if not extra.get("data_dir") and os.environ.get("MARA_BENCH_DATA"):
        extra["data_dir"] = os.environ["MARA_BENCH_DATA"]
    axes: dict[str, list] = {}
    for key, field in AXES.items():
        if key in doc:
            vals = doc[key] if isinstance(doc[key], list) else [doc[key]]
            if not vals:
                raise UserError(f"{where}: key '{key}' is an empty list; remove it or give at least one value")
            if field == "mara":  # YAML 1.1 reads bare off/on as booleans
                vals = [{False: "off", True: "on"}.get(v, v) if isinstance(v, bool) else v for v in vals]
            axes[field] = vals
    ov = doc.get("overrides", {}) or {}
    ov_list = ov if isinstance(ov, list) else [ov]
    if not all(isinstance(o, dict) for o in ov_list):
        raise UserError(f"{where}: 'overrides' must be a mapping (or a list of mappings) like {{train.max_epochs: 5}}")
    names = list(axes)
    cfgs, seen = [], set()
    known = backbone_entries()
    for combo in itertools.product(*(axes[n] for n in names), ov_list):
        d = dict(extra, **dict(zip(names, combo[:-1], strict=True)), overrides=dict(combo[-1]))
        try:
            cfg = RunConfig.from_dict(d)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        if cfg.backbone not in known:
            from ..errors import unknown

            raise UserError(f"{where}: {unknown('backbone', cfg.backbone, known)}")
        if cfg.run_id() not in seen:
            seen.add(cfg.run_id())
            cfgs.append(cfg)
    return cfgs


def check_runs(cfgs, where: str = "sweep file") -> None:
    """Validate every planned run (names, presets, override keys and values, user files) before anything is
    submitted: a bad entry is one UserError naming the run, not a job array of failures."""
    from .pipeline import check_config

    for cfg in cfgs:
        try:
            check_config(cfg)
        except UserError as e:
            raise UserError(f"{where}: run {cfg.run_id()}: {e}") from None


# ------------------------------------------------------------------------------------------- one job
class SweepJob(submitit.helpers.Checkpointable):
    """The callable every sweep job runs: ``run_config`` on one config, recording its state.

    On preemption/timeout submitit calls :meth:`checkpoint`; it resubmits the same call, and the pipeline
    resumes from the run's ``checkpoint.pt``.
    """

    def __init__(self, setup: list[str] | None = None):
        self.setup = list(setup or [])

    def _run_setup(self) -> None:
        import importlib

        for spec in self.setup:
            mod, _, fn = spec.partition(":")
            obj = importlib.import_module(mod)
            if fn:
                getattr(obj, fn)()

    def __call__(self, cfg_dict: dict[str, Any]) -> str:
        from ..config import RunConfig
        from .results import run_dir

        self._run_setup()
        cfg = RunConfig.from_dict(cfg_dict)
        rd = run_dir(cfg)
        if is_complete(rd):
            return str(rd)
        from ..errors import RunLocked

        started = []
        try:
            from .pipeline import run_config

            # 'running' once this job holds the run folder's lock (a second trainer stops with RunLocked)
            out = run_config(cfg, force=False, progress=False,
                             on_start=lambda d: (started.append(d), write_status(d, "running")))
        except RunLocked:  # another live process trains this run: its status is its own, leave it
            raise
        except BaseException as e:  # record, then let submitit see the failure
            if (started or rd.exists()) and not getattr(self, "_requeued", False):  # requeue: SystemExit
                write_status(rd, "failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            raise
        write_status(rd, "done")
        return str(out)

    def checkpoint(self, cfg_dict: dict[str, Any]) -> submitit.helpers.DelayedSubmission:
        from ..config import RunConfig
        from .results import run_dir

        write_status(run_dir(RunConfig.from_dict(cfg_dict)), "requeued")
        self._requeued = True
        return submitit.helpers.DelayedSubmission(SweepJob(self.setup), cfg_dict)


def write_status(rd: Path, state: str, **extra: Any) -> None:
    rd.mkdir(parents=True, exist_ok=True)
    job_id = None
    try:
        job_id = submitit.JobEnvironment().job_id
    except RuntimeError:  # not inside a submitit job
        pass
    atomic_write_json(rd / STATUS_FILE, {"state": state, "host": socket.gethostname(), "pid": os.getpid(),
                                         "job_id": job_id, "time": time.time(), **extra})


# ------------------------------------------------------------------------------------------- status
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_state(rd: Path) -> str:
    """done | running | failed | pending, from the run folder alone."""
    if is_complete(rd):
        return "done"
    from .lock import read_holder

    holder = read_holder(rd)  # a live process on this host holds the run's lock (e.g. a 'mara_bench run')
    if holder and holder.get("host") == socket.gethostname() and _pid_alive(int(holder.get("pid", -1))):
        return "running"
    f = rd / STATUS_FILE
    if not f.is_file():
        return "pending" if not (rd / CHECKPOINT).exists() else "failed"
    st = read_json(f)
    if st.get("state") in ("running", "requeued"):
        if st.get("host") == socket.gethostname():
            return "running" if _pid_alive(int(st.get("pid", -1))) or st["state"] == "requeued" else "failed"
        newest = max((p.stat().st_mtime for p in rd.iterdir()), default=st.get("time", 0))
        return "running" if time.time() - newest < STALE_S else "failed"
    return "failed" if st.get("state") == "failed" else "pending"


def status(cfgs) -> dict[str, list[str]]:
    from .results import run_dir

    out: dict[str, list[str]] = {"done": [], "running": [], "failed": [], "pending": []}
    for cfg in cfgs:
        out[run_state(run_dir(cfg))].append(cfg.run_id())
    return out


# ------------------------------------------------------------------------------------------- executors
def sweep_folder(cfgs, name: str) -> Path:
    base = Path(cfgs[0].output_dir) if cfgs else Path("results")
    return base / ".sweeps" / name / "submitit"


def slurm_parameters(partition=None, time_min: int = 240, account=None, gpus_per_job: int = 1, jobs: int = 64,
                     cpus_per_task: int | None = None, job_name: str = "mara_bench") -> dict[str, Any]:
    p: dict[str, Any] = {"job_name": job_name, "time": int(time_min), "array_parallelism": int(jobs),
                         "nodes": 1, "ntasks_per_node": 1, "signal_delay_s": 120}
    if partition:
        p["partition"] = partition
    if account:
        p["account"] = account
    if gpus_per_job:
        p["gpus_per_node"] = int(gpus_per_job)
    if cpus_per_task:
        p["cpus_per_task"] = int(cpus_per_task)
    return p


class _ScriptOnlySlurmExecutor(submitit.SlurmExecutor):
    """submitit's SlurmExecutor without the 'is srun here?' check: used only to render the sbatch script."""

    @classmethod
    def affinity(cls) -> int:
        return 2


def sbatch_script(folder: Path, n_jobs: int, params: dict[str, Any]) -> str:
    """The sbatch script submitit would submit for a job array of ``n_jobs`` runs with ``params``."""
    ex = _ScriptOnlySlurmExecutor(folder=folder)
    ex.update_parameters(**params)
    ex.parameters["map_count"] = n_jobs
    return ex._make_submission_file_text(ex._submitit_command_str, "dry-run")


def submit_slurm(todo, folder: Path, params: dict[str, Any], setup=None) -> list:
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=20)
    ex.update_parameters(**params)
    return ex.map_array(SweepJob(setup), [c.resolved() for c in todo])


def job_error_line(exc: BaseException) -> str:
    """The job's own one-line error (e.g. 'RunLocked: run folder ... is in use: PID ...') from submitit's
    FailedJobError, whose text is the remote traceback followed by the log path; else its last line."""
    import re

    text = str(exc).strip()
    found = re.findall(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Locked|Full|Diverged|Exception|Interrupt)): (.+)$", text, re.M)
    found = [f for f in found if f[0] != "FailedJobError"]
    if found:
        kind, msg = found[-1]
        return f"{kind}: {msg.strip()[:400]}"
    return text.splitlines()[-1][:200] if text else repr(exc)


def run_local(todo, folder: Path, jobs: int = 1, setup=None, timeout_min: int = 24 * 60, progress: bool = True,
              poll_s: float = 0.5) -> dict[str, str]:
    """Run ``todo`` through submitit's LocalExecutor with at most ``jobs`` at once; wait; return run_id -> state."""
    from tqdm import tqdm

    ex = submitit.LocalExecutor(folder=folder)
    ex.update_parameters(timeout_min=timeout_min)
    queue = list(todo)
    active: dict[str, Any] = {}
    result: dict[str, str] = {}
    bar = tqdm(total=len(queue), desc="sweep", disable=not progress, unit="run")
    while queue or active:
        while queue and len(active) < max(1, jobs):
            cfg = queue.pop(0)
            active[cfg.run_id()] = ex.submit(SweepJob(setup), cfg.resolved())
        for rid, job in list(active.items()):
            if job.done():
                try:
                    job.result()
                    result[rid] = "done"
                except Exception as e:  # noqa: BLE001 - the job's own error, reported per run
                    result[rid] = f"failed: {job_error_line(e)}"
                del active[rid]
                bar.update(1)
        time.sleep(poll_s)
    bar.close()
    return result
