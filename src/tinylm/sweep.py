"""`tinylm sweep`: run a family of trainings from one YAML file, resumably.

A sweep file names a base config and the runs to make from it:

    base: seed_exp1.yaml          # relative to the sweep file (optional)
    out: runs/lr_sweep            # where run directories go (RUN = OUT/NAME)
    eval: [val, test]             # whole-split evaluation after each run ([] for none)
    eval_data: ["{data}-bible:test"]  # and on other datasets, as DATASET:SPLIT; {data} is
                                  # the run's data.path (out-of-domain sets, one per tokenizer)
    prepare: [prepare builtin:wiki --out data/wiki]  # tinylm commands, run if --out is missing
    set: {train.epochs: 2}        # overrides for every run
    grid: {optim.lr: [5e-4, 1e-3], train.seed: [0, 1]}   # every combination
    runs:                         # and/or a list; an entry may carry its own name
      - {name: exp1}              # and its own base config (to compare two recipes)
      - {optim.lr: 5e-4}
      - {name: other, base: other.yaml}
    scales:                       # named variants chosen with --scale, applied last
      cpu: {prepare: ..., set: {...}, grid: {...}, out: ...}

With both `runs` and `grid`, every run is crossed with every grid point. A run without a
name is named after its overrides that differ between runs ("lr-0.0005_seed-1"). Each run
is the command `tinylm train BASE OVERRIDES... --out RUN` in its own process: re-running a
sweep skips finished runs (their checkpoint says so), resumes interrupted ones and starts
the rest; the run directories hold every result, so `tinylm report` can rebuild the tables.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinylm.config import config_differences, load_config, read_yaml
from tinylm.errors import TinyLMError
from tinylm.rundir import FINISHED, SUPERVISED_ENV, RunDir

SWEEP_KEYS = {"base", "out", "eval", "eval_data", "prepare", "set", "grid", "runs", "scales"}
SCALE_KEYS = {"out", "prepare", "set", "grid"}
SPLITS = ("train", "val", "test")


@dataclass
class SweepRun:
    name: str
    overrides: list[str]
    """`section.key=value` strings after the base file, in the order they apply."""
    out: Path
    base: Path | None = None
    """The base config: the entry's own `base:`, else the sweep's."""


@dataclass
class Sweep:
    path: Path
    base: Path | None
    out: Path
    eval_splits: list[str]
    prepare: list[list[str]] = field(default_factory=list)
    """tinylm commands (argument lists) that make the data; each runs if its --out is missing."""
    runs: list[SweepRun] = field(default_factory=list)
    eval_data: list[str] = field(default_factory=list)
    """DATASET:SPLIT templates evaluated after each run; {data} is the run's data.path."""

    def train_command(self, run: SweepRun) -> list[str]:
        base = [str(run.base)] if run.base else []
        return [*_tinylm(), "train", *base, *run.overrides, "--out", str(run.out)]

    def eval_command(self, run: SweepRun) -> list[str]:
        return [*_tinylm(), "eval", str(run.out), "--split", *self.eval_splits]

    def other_data(self, run: SweepRun) -> dict[str, list[str]]:
        """The run's eval_data: dataset path -> splits, {data} filled in."""
        data = load_config(run.base, run.overrides).data.path
        found: dict[str, list[str]] = {}
        for entry in self.eval_data:
            path, split = entry.replace("{data}", data).rsplit(":", 1)
            found.setdefault(str(Path(path)), []).append(split)  # as `tinylm eval` keys it
        return found

    def other_data_commands(self, run: SweepRun) -> list[list[str]]:
        return [
            [*_tinylm(), "eval", str(run.out), "--data", path, "--split", *splits]
            for path, splits in self.other_data(run).items()
        ]

    def select(self, only: list[str] | None) -> list[SweepRun]:
        """The runs named in `only` (all when None), in the sweep's order."""
        unknown = set(only or []) - {r.name for r in self.runs}
        if unknown:
            raise TinyLMError(f"--only: no run named {', '.join(sorted(unknown))} in {self.path}")
        return [r for r in self.runs if not only or r.name in only]

    def status(self, run: SweepRun) -> str:
        """'done', 'trained' (evaluation missing), 'partial' (resumable) or 'new'; a run
        directory that holds another config than the sweep's is refused."""
        rundir = RunDir(run.out)
        if rundir.config.is_file():
            from tinylm.training.trainer import resolve_model  # torch: only when needed

            wanted = load_config(run.base, run.overrides)
            resolve_model(wanted)  # as the run's config.yaml holds it
            diffs = config_differences(wanted, load_config(rundir.config))
            if diffs:
                raise TinyLMError(
                    f"run {run.name}: {run.out} holds a run with another config "
                    f"({', '.join(diffs[:3])} differ); remove that directory or rename the run"
                )
        meta = rundir.final_meta()
        if not meta:
            return "new"
        if meta.get("stop_reason") not in FINISHED:
            return "partial"
        evaluated = rundir.current_evals(meta)  # of the final model on its own data
        if any(split not in evaluated for split in self.eval_splits):
            return "trained"
        results = rundir.read_eval_results()  # other datasets: keyed DATASET:SPLIT
        for path, splits in self.other_data(run).items():
            for split in splits:
                if results.get(f"{path}:{split}", {}).get("step") != meta.get("step"):
                    return "trained"
        return "done"


def load_sweep(
    path: Path, scale: str | None = None, extra: list[str] | None = None, out: Path | None = None
) -> Sweep:
    """Read a sweep file and expand it into runs; every run's config is built (and so
    checked) here, before anything trains."""
    spec = _read(path)
    scales = _mapping(spec.get("scales"), f"{path}: scales", "of scale names to settings")
    if scale is not None:
        if scale not in scales:
            known = ", ".join(scales) or "none"
            raise TinyLMError(f"{path}: no scale {scale!r} (scales: {known})")
        chosen = _mapping(scales[scale], f"{path}: scales.{scale}", "of settings")
        _check_keys(chosen, SCALE_KEYS, f"{path}: scales.{scale}")
        _check_path(chosen, "out", f"{path}: scales.{scale}")
    else:
        chosen = {}
    _check_path(spec, "base", str(path))
    _check_path(spec, "out", str(path))
    base = _base_config(spec.get("base"), path)
    default_out = Path(spec.get("out") or f"runs/{path.stem}")
    if scale is not None:
        default_out = Path(chosen.get("out") or f"{default_out}-{scale}")
    eval_splits = spec.get("eval", ["val", "test"]) or []
    if not isinstance(eval_splits, list) or any(s not in SPLITS for s in eval_splits):
        raise TinyLMError(f"{path}: eval must be a list of splits from {', '.join(SPLITS)}")
    eval_data = spec.get("eval_data") or []
    if not isinstance(eval_data, list) or not all(
        isinstance(e, str) and e.rpartition(":")[0] and e.rpartition(":")[2] in SPLITS
        for e in eval_data
    ):
        raise TinyLMError(
            f"{path}: eval_data must be a list of DATASET:SPLIT (split one of "
            f"{', '.join(SPLITS)}), e.g. '{{data}}-bible:test'"
        )

    common = {**_mapping(spec.get("set"), f"{path}: set")}
    grid = {**_mapping(spec.get("grid"), f"{path}: grid")}
    grid.update(_mapping(chosen.get("grid"), f"{path}: scales.{scale}.grid"))
    entries = spec.get("runs") or [{}]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise TinyLMError(f"{path}: runs must be a list of mappings (section.key: value)")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise TinyLMError(f"{path}: grid.{key} must be a non-empty list of values")
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]

    # Each run: common settings, its list entry, its grid point, the scale, the command line.
    combos = []
    for entry in entries:
        entry = dict(entry)
        name = entry.pop("name", None)
        _check_path(entry, "base", f"{path}: runs")
        own_base = _base_config(entry.pop("base", None), path)
        for point in points:
            combos.append((name, own_base, {**entry, **point}))
    varying = _varying_keys([c for _, _, c in combos])
    scale_set = _mapping(chosen.get("set"), f"{path}: scales.{scale}.set")
    sweep = Sweep(
        path,
        base,
        out or default_out,
        list(eval_splits),
        _commands(chosen.get("prepare") or spec.get("prepare"), path),
        eval_data=list(eval_data),
    )
    seen: set[str] = set()
    for name, own_base, settings in combos:
        if name is not None:
            grid_part = _name_of(settings, varying & set(grid)) if varying & set(grid) else ""
            name = _check_name(str(name), path) + (f"_{grid_part}" if grid_part else "")
        else:
            name = _name_of(settings, varying)
        if name in seen:
            raise TinyLMError(f"{path}: two runs would both be named {name!r}; give them names")
        seen.add(name)
        overrides = [
            *_as_overrides(common),
            *_as_overrides(settings),
            *_as_overrides(scale_set),
            *(extra or []),
        ]
        sweep.runs.append(SweepRun(name, overrides, sweep.out / name, own_base or base))
    return sweep


def _base_config(name: Any, path: Path) -> Path | None:
    """A base config named in the sweep file (relative to it); it must exist."""
    if not name:
        return None
    base = Path(name)
    if not base.is_absolute():
        base = path.parent / base
    if not base.is_file():
        raise TinyLMError(f"{path}: base config {base} does not exist")
    return base


def check_configs(sweep: Sweep) -> None:
    """Build every run's config (the data need not exist yet): a typo fails before any run."""
    for run in sweep.runs:
        try:
            load_config(run.base, run.overrides)
        except TinyLMError as err:
            raise TinyLMError(f"run {run.name}: {err}") from None


def run_sweep(sweep: Sweep, jobs: int = 1, only: list[str] | None = None) -> int:
    """Train (and evaluate) every run not yet done; returns the exit status."""
    runs = sweep.select(only)
    check_configs(sweep)
    _prepare_data(sweep)
    queue: list[tuple[SweepRun, list[list[str]]]] = []
    for run in runs:
        status = sweep.status(run)
        print(f"sweep: {run.name}: {STATUS_WORDS[status]}", file=sys.stderr)
        steps = [] if status in ("done", "trained") else [sweep.train_command(run)]
        if status != "done" and sweep.eval_splits:
            steps.append(sweep.eval_command(run))
        if status != "done":
            steps.extend(sweep.other_data_commands(run))
        if steps:
            queue.append((run, steps))
    logs = sweep.out / "logs" if jobs > 1 else None
    env = {**os.environ, SUPERVISED_ENV: "1"}
    if jobs > 1:  # each run gets its share of the cores unless the user chose
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    runner = _Runner(logs, env)
    failed: list[str] = []
    done, start = len(runs) - len(queue), time.monotonic()
    finished_here = 0
    previous = {
        sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        while queue or runner.active:
            while queue and len(runner.active) < jobs:
                runner.start(*queue.pop(0))
            for run, code in runner.wait_any():
                done += 1
                if code in (130, 143):  # a run stopped by a signal: stop the sweep, resumable
                    raise KeyboardInterrupt
                if code != 0:
                    failed.append(run.name)
                    where = f" (log: {logs / run.name}.log)" if logs else ""
                    print(f"sweep: {run.name} failed with exit {code}{where}", file=sys.stderr)
                finished_here += 1
                minutes = (time.monotonic() - start) / 60
                left = len(queue) + len(runner.active)
                eta = minutes / finished_here * left  # completions come `jobs` at a time
                print(
                    f"sweep: {done}/{len(runs)} runs done, {minutes:.1f} min this session, "
                    f"ETA {eta:.0f} min for {left} more",
                    file=sys.stderr,
                )
    except KeyboardInterrupt:
        print("sweep: interrupted; run the same command to resume", file=sys.stderr)
        return 130
    finally:
        # Whatever ended the loop, no run is left training without its sweep: each gets one
        # SIGINT, saves a checkpoint and exits.
        runner.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        print(f"sweep: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


STATUS_WORDS = {
    "done": "finished and evaluated, skipping",
    "trained": "finished, evaluating",
    "partial": "interrupted earlier, resuming",
    "new": "starting",
}


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class _Runner:
    """Child processes of runs in flight, each working through its commands in order
    (train, then eval); output to the terminal, or to OUT/logs/NAME.log when parallel."""

    def __init__(self, logs: Path | None, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.active: dict[str, tuple[SweepRun, subprocess.Popen, list[list[str]]]] = {}

    def start(self, run: SweepRun, steps: list[list[str]]) -> None:
        output = None
        if self.logs is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
            output = open(self.logs / f"{run.name}.log", "ab")  # noqa: SIM115 (closed below)
        # Its own process group: a Ctrl-C reaches the sweep alone, which passes on exactly
        # one SIGINT (a second would make the trainer quit without its checkpoint).
        proc = subprocess.Popen(
            steps[0], stdout=output, stderr=output, env=self.env, start_new_session=True
        )
        if output is not None:
            output.close()  # the child holds its own descriptor
        self.active[run.name] = (run, proc, steps[1:])

    def wait_any(self) -> list[tuple[SweepRun, int]]:
        """Runs whose last command ended (or whose command failed), with the exit code."""
        while True:
            ended = []
            for name, (run, proc, rest) in list(self.active.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self.active[name]
                if code == 0 and rest:
                    self.start(run, rest)
                else:
                    ended.append((run, code))
            if ended:
                return ended
            time.sleep(0.2)

    def stop(self) -> None:
        for _, proc, _ in self.active.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, proc, _ in self.active.values():
            proc.wait()
        self.active.clear()


def _prepare_data(sweep: Sweep) -> None:
    for args in sweep.prepare:
        out = Path(args[args.index("--out") + 1])
        if out.is_dir() and any(out.iterdir()):
            continue  # made by an earlier sweep (prepare itself only renames complete work)
        print(f"sweep: making {out}: tinylm {shlex.join(args)}", file=sys.stderr)
        code = subprocess.call([*_tinylm(), *args])
        if code != 0:
            raise TinyLMError(f"making {out} failed (exit {code}); see the message above")


def _commands(value: Any, path: Path) -> list[list[str]]:
    """`prepare`: one tinylm command line or a list of them, each naming its --out."""
    lines = [value] if isinstance(value, str) else value or []
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise TinyLMError(f"{path}: prepare must be a tinylm command line or a list of them")
    commands = []
    for line in lines:
        args = shlex.split(str(line))
        if args[:1] == ["tinylm"]:
            args = args[1:]
        if "--out" not in args[:-1]:
            raise TinyLMError(f"{path}: prepare command {line!r} must name its --out directory")
        commands.append(args)
    return commands


def _tinylm() -> list[str]:
    return [sys.executable, "-m", "tinylm"]


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TinyLMError(f"{path}: no such sweep file")
    spec = read_yaml(path)  # UTF-8, YAML, no key twice
    if not isinstance(spec, dict):
        raise TinyLMError(f"{path}: a sweep file is a mapping with base/runs/grid keys")
    _check_keys(spec, SWEEP_KEYS, str(path))
    return spec


def _check_keys(spec: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise TinyLMError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(allowed))})"
        )


def _mapping(value: Any, where: str, of: str = "of section.key: value") -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TinyLMError(f"{where} must be a mapping {of}")
    return value


def _check_path(spec: dict[str, Any], key: str, where: str) -> None:
    """`base` and `out` name a file or directory: text, not a number or a list."""
    if spec.get(key) is not None and not isinstance(spec[key], str):
        raise TinyLMError(f"{where}: {key} must be a path (text), not {spec[key]!r}")


def _as_overrides(settings: dict[str, Any]) -> list[str]:
    return [f"{key}={_text(value)}" for key, value in settings.items()]


def _text(value: Any) -> str:
    """A YAML value as the command line would spell it (JSON is valid YAML)."""
    return value if isinstance(value, str) else json.dumps(value)


def _varying_keys(combos: list[dict[str, Any]]) -> set[str]:
    keys = {k for c in combos for k in c}
    return {k for k in keys if len({_text(c.get(k)) for c in combos}) > 1}


def _name_of(settings: dict[str, Any], keys: set[str]) -> str:
    """'lr-0.0005_seed-1' from the settings that differ between runs ('base' if none)."""
    short = {k: k.rpartition(".")[2] for k in keys}
    clash = {s for s in short.values() if list(short.values()).count(s) > 1}
    parts = []
    for key in settings:
        if key in keys:
            label = key if short[key] in clash else short[key]
            parts.append(f"{label}-{_text(settings[key])}")
    return _join(parts) or "base"


def _check_name(name: str, path: Path) -> str:
    """A run's given name becomes a directory name beside the others."""
    if not name or name in (".", "..", "logs") or "/" in name:
        raise TinyLMError(
            f"{path}: run name {name!r} cannot name a directory of the sweep's output "
            "(not empty, '.', '..' or 'logs', and no '/')"
        )
    return name


def _join(parts: list[str]) -> str:
    name = "_".join(p for p in parts if p)
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in name)
