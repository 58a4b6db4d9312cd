"""Seeds -> N candidate tasks -> verified tasks, in parallel, with a manifest.

Candidate slots come from the mix plan (sandmle/envgen/mix.py): slot i takes a seed of its
(modality, task type) cell and random seed `config.seed * 1_000_003 + i`, so a candidate's
task depends on (config, i) only, never on scheduling. Its four roles run in order
(strategist, developer, writer, leaderboard in the farm, MLOps), the leaderboard's noise is
measured (sandmle/envgen/noise.py), the task is saved to a staging folder, regenerated once
more from the same seed, and verified; accepted tasks move to `<workdir>/tasks/<task_id>`,
and every candidate gets one manifest line saying what happened. A rerun into the same
workdir resumes (sandmle/envgen/runstate.py); Ctrl-C or a failing LLM endpoint stops the
run with the summary so far.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import math
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import ml_collections

from sandmle.envgen import llm, mix, noise, roles, runstate
from sandmle.envgen.runstate import EnvgenError
from sandmle.envgen.summary import format_summary, summarize
from sandmle.envgen.verify import Reason, Rejection, VerifyConfig, verify_task
from sandmle.tasks.task import TaskError, csv_bytes, dumps_json, save_task

GENERATOR_VERSION = "sandmle-envgen/2"


@dataclasses.dataclass
class Roles:
    """The roles shared by all candidates (the MLDeveloper is made per candidate, since the
    LLM-backed one keeps the generator code it accepted for the regeneration check)."""

    strategist: roles.DataStrategist
    mlops: roles.MLOpsEngineer
    writer: roles.TechnicalWriter


def make_roles(config: ml_collections.ConfigDict) -> Roles:
    """Builds procedural or LLM-backed roles as `config.roles` says."""
    client = llm.ChatClient(config.llm) if "llm" in config.roles.values() else None
    attempts = config.llm.max_attempts if client else 0
    for name, kind in config.roles.items():
        if kind not in ("procedural", "llm"):
            raise ValueError(f"config.roles.{name} is {kind!r}; expected 'procedural' or 'llm'")
    strategist = (roles.LLMDataStrategist(client, attempts) if config.roles.strategist == "llm"
                  else roles.DataStrategist())
    writer = (roles.LLMTechnicalWriter(client, attempts) if config.roles.writer == "llm"
              else roles.TechnicalWriter())
    return Roles(strategist=strategist, mlops=roles.MLOpsEngineer(), writer=writer)


def make_developer(config: ml_collections.ConfigDict, farm: Any) -> roles.MLDeveloper:
    # One per candidate: the LLM developer keeps the code it accepted for regeneration.
    if config.roles.developer == "llm":
        return roles.LLMMLDeveloper(farm, config.developer, llm.ChatClient(config.llm),
                                    config.llm.max_attempts)
    return roles.MLDeveloper(farm, config.developer)


def task_id_for(index: int, seed_id: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in seed_id)[:48]
    return f"t{index:05d}-{safe}"


def _data_tree(generated: Any, dna: Any) -> dict[str, bytes]:
    """The bytes that regeneration must reproduce (tables, media, DNA)."""
    out = {"public/train.csv": csv_bytes(generated.train), "public/test.csv": csv_bytes(generated.test),
           "public/sample_submission.csv": csv_bytes(generated.sample_submission),
           "private/answers.csv": csv_bytes(generated.answers),
           "private/dna.json": dumps_json(roles.dna_dict(dna)).encode()}
    for rel, data in (generated.media or {}).items():
        out[f"public/{rel}"] = bytes(data)
    return out


def build_candidate(index: int, seed_id: str, seed_dna: Any, config: ml_collections.ConfigDict,
                    the_roles: Roles, farm: Any, workdir: Path) -> dict:
    """Runs the roles for one candidate and returns its manifest row (never raises)."""
    rng_seed = int(config.seed) * 1_000_003 + index
    task_id = task_id_for(index, seed_id)
    row: dict[str, Any] = {"task_id": task_id, "index": index, "seed_id": seed_id,
                           "rng_seed": rng_seed, "status": "rejected", "reason": None,
                           "reasons": [], "details": [], "timings": {}}
    timings = row["timings"]
    scratch = workdir / "staging" / task_id
    start = time.perf_counter()
    stage = "strategist"

    def clock(name: str, t0: float) -> None:
        timings[f"{name}_s"] = round(time.perf_counter() - t0, 3)

    def reject(rejections: list[Rejection]) -> dict:
        row["reasons"] = sorted({r.reason.value for r in rejections})
        row["reason"] = rejections[0].reason.value
        row["details"] = [str(r) for r in rejections]
        return row

    try:
        t0 = time.perf_counter()
        dna = _sized(the_roles.strategist.propose(seed_dna, rng_seed), config)
        clock("strategist", t0)
        d = roles.dna_dict(dna)
        row.update(modality=d.get("modality"), task_type=d.get("task_type"), metric=d.get("metric"))
        developer = make_developer(config, farm)
        stage = "generate"
        t0 = time.perf_counter()
        generated = developer.generate(dna, rng_seed, config.scale)
        clock("generate", t0)
        spec = roles.grading_spec(generated, d.get("metric"), d.get("metric_kwargs"))
        row["metric"] = spec["metric"]
        lower = roles.spec_lower(spec)
        stage = "writer"
        t0 = time.perf_counter()
        description = the_roles.writer.write(dna, generated, dict(spec, is_lower_better=lower))
        clock("writer", t0)
        stage = "leaderboard"
        t0 = time.perf_counter()
        public = roles.stage_public(scratch / "stage" / "public", generated, description)
        refs = developer.run_leaderboard(public, generated, spec, developer.solutions(dna),
                                         scratch / "runs")
        clock("leaderboard", t0)
        row["references"] = [r.to_dict() for r in refs]
        stage = "grading"
        sample_score = roles.score_file(public / "sample_submission.csv",
                                        roles.staged_answers(generated, spec, scratch / "private"), spec)
        scored = [r for r in refs if r.score is not None]
        if len(scored) < config.min_scored_solutions:
            return reject([Rejection(Reason.LEADERBOARD_FAILED,
                                     f"{len(scored)}/{len(refs)} reference solutions scored")])
        stage = "noise"
        t0 = time.perf_counter()
        row["noise"] = _noise(generated, spec, refs, developer, d.get("task_type"), lower, config)
        clock("noise", t0)
        grading = the_roles.mlops.build_grading(dna, spec, refs, sample_score, row["noise"])
        row["bronze"] = grading["thresholds"]["bronze"]
        provenance = {"seed_id": seed_id, "generator_version": GENERATOR_VERSION,
                      "random_seed": rng_seed, "scale": config.scale,
                      "roles": dict(config.roles)}
        stage = "save"
        task = save_task(scratch / task_id, generated, grading, dna, provenance, description)
        stage = "verify"
        t0 = time.perf_counter()
        regen_dna = _sized(the_roles.strategist.propose(seed_dna, rng_seed), config)
        regenerated = developer.generate(regen_dna, rng_seed, config.scale)
        rejections = verify_task(task, [r.to_dict() for r in refs],
                                 regenerated=_data_tree(regenerated, regen_dna),
                                 original=_data_tree(generated, dna),
                                 secrets=roles.rule_secrets(dna),
                                 config=VerifyConfig(**config.verify.to_dict()))
        clock("verify", t0)
        if rejections:
            return reject(rejections)
        final = workdir / "tasks" / task_id
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(task.root), str(final))
        row["status"] = "accepted"
        return row
    except llm.LLMRoleError as e:
        row["llm_endpoint_failed"] = e.endpoint_failed
        return reject([Rejection(Reason.LLM_FAILED, f"{stage}: {e}"[:1000])])
    except TaskError as e:
        return reject([Rejection(Reason.INVALID_TASK, f"{stage}: {e}"[:1000])])
    except Exception as e:  # noqa: BLE001 - one broken candidate must not stop the run
        reason = Reason.LEADERBOARD_FAILED if stage in ("leaderboard", "grading") else Reason.GENERATION_ERROR
        tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
        return reject([Rejection(reason, f"{stage}: {type(e).__name__}: {e} [{tb}]"[:1000])])
    finally:
        timings["total_s"] = round(time.perf_counter() - start, 3)
        if not config.keep_staging:
            shutil.rmtree(scratch, ignore_errors=True)


def split_ids(task_ids: list[str], validation_fraction: float, seed: int) -> dict[str, list[str]]:
    """A deterministic train/validation split: order by a keyed hash, take the first share."""
    ranked = sorted(task_ids, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).hexdigest())
    n_val = int(round(validation_fraction * len(ranked))) if ranked else 0
    if validation_fraction > 0 and len(ranked) >= 2:
        n_val = max(1, n_val)
    return {"train": sorted(ranked[n_val:]), "validation": sorted(ranked[:n_val])}


def _sized(dna: Any, config: ml_collections.ConfigDict) -> Any:
    """The DNA with its test set scaled by `config.test_size_scale` (a speed knob)."""
    scale = float(config.get("test_size_scale", 1.0))
    if scale == 1.0 or not hasattr(dna, "replace"):
        return dna
    return dna.replace(n_test=max(20, int(round(dna.n_test * scale))))


def _noise(generated: Any, spec: dict, refs: list, developer: Any, task_type: str,
           lower: bool, config: ml_collections.ConfigDict) -> dict:
    """The leaderboard's noise figures (grading.json's "noise")."""
    unit = noise.bootstrap_unit(task_type)
    ids = generated.answers[spec["id_column"]].astype(str).tolist()
    return noise.analyse([r.to_dict() for r in refs],
                         {r.name: r.prediction for r in refs if r.prediction is not None},
                         developer.y_true, spec["metric"], spec.get("metric_kwargs") or {},
                         lower, noise.groups_of(ids, unit), unit,
                         noise.NoiseConfig(bootstrap_samples=int(config.verify.bootstrap_samples),
                                           span_sd=float(config.verify.span_sd),
                                           signal_sd=float(config.verify.signal_sd)))


def _load_seeds(config: ml_collections.ConfigDict) -> list[tuple[str, Any]]:
    from sandmle.envgen import dna as dna_mod
    seeds = dna_mod.load_seeds() if hasattr(dna_mod, "load_seeds") else None
    if seeds is None:
        from sandmle.envgen import seeds as seeds_mod
        seeds = seeds_mod.load_seeds()
    if isinstance(seeds, dict):
        items = sorted(seeds.items())
    else:
        items = [(str(roles.dna_field(s, "seed_id") or roles.dna_field(s, "name") or roles.dna_field(s, "id")), s)
                 for s in seeds]
    if config.seed_ids:
        wanted = set(config.seed_ids)
        items = [(k, v) for k, v in items if k in wanted]
        missing = wanted - {k for k, _ in items}
        if missing:
            raise ValueError(f"config.seed_ids names unknown seeds: {sorted(missing)}")
    if not items:
        raise ValueError("no seed DNAs to generate from")
    return items


def make_farm(config: ml_collections.ConfigDict) -> Any:
    from sandmle.sandbox import SandboxFarm
    return SandboxFarm(config.farm)


def _cell_key(row: dict) -> str:
    return f"{row.get('modality')}/{row.get('task_type')}"


def _fail(message: str, code: int = 2) -> EnvgenError:
    print(f"envgen: {message}", file=sys.stderr, flush=True)
    return EnvgenError(message, code)


def run_envgen(config: ml_collections.ConfigDict, workdir: str, farm: Any = None,
               progress: bool = True, printer: Callable[[str], None] = print) -> dict:
    """Generates candidates until `config.target_accepted` tasks are accepted in the mix's
    proportions (or `config.num_candidates` are spent); writes tasks/, manifest.jsonl,
    split.json, summary.json and run.json under `workdir`; prints and returns the summary.

    Rerunning into the same workdir resumes; other settings there, an unreachable LLM
    endpoint, or Ctrl-C end the run with `EnvgenError` (a SystemExit: one line on stderr,
    exit status 2, 1 or 130) after writing what was done.
    """
    work = Path(workdir)
    try:
        seeds = _load_seeds(config)
        run_cells = mix.cells(seeds, config.mix.modality, config.mix.task_type)
        the_roles = make_roles(config)
    except (ValueError, mix.MixError) as e:
        raise _fail(str(e)) from None
    try:
        previous = runstate.open_workdir(work, config, GENERATOR_VERSION)
    except EnvgenError as e:
        raise _fail(str(e), e.code) from None
    if "llm" in config.roles.values():
        try:
            llm.probe(config.llm)
        except llm.LLMError as e:
            raise _fail(f"LLM endpoint: {e}; start it or fix --config.llm.base_url", 1) from None
    target = int(config.target_accepted)
    quota = mix.quotas(run_cells, target) if target else {}
    ratio = config.num_candidates / target if target else math.inf
    cap = {c.key: max(3, math.ceil(quota.get(c.key, 0) * ratio)) if target else math.inf
           for c in run_cells}
    rows: list[dict] = list(previous)
    done = {r["index"] for r in rows}
    accepted = {c.key: 0 for c in run_cells}
    tried = {c.key: 0 for c in run_cells}
    for r in rows:
        tried[_cell_key(r)] = tried.get(_cell_key(r), 0) + 1
        if r["status"] == "accepted":
            accepted[_cell_key(r)] = accepted.get(_cell_key(r), 0) + 1
    own_farm = farm is None
    farm = make_farm(config) if own_farm else farm
    lock = threading.Lock()
    manifest = work / "manifest.jsonl"
    start = time.perf_counter()
    stopped, code, endpoint_fails = "", 0, 0
    pending: dict[cf.Future, str] = {}
    slots = mix.plan(run_cells)
    pool = cf.ThreadPoolExecutor(max_workers=config.parallel_candidates)
    from tqdm.auto import tqdm
    bar = tqdm(total=config.num_candidates, initial=len(rows), desc="envgen",
               disable=not progress, unit="task")

    def launchable(key: str) -> bool:
        busy = sum(1 for k in pending.values() if k == key)
        if tried.get(key, 0) + busy >= cap[key]:
            return False
        return not target or accepted.get(key, 0) + busy < quota.get(key, 0)

    def next_slot():
        if not any(launchable(c.key) for c in run_cells):
            return None
        for index, cell, seed_id, seed_dna in slots:
            if index not in done and launchable(cell.key):
                return index, cell, seed_id, seed_dna
        return None

    try:
        while True:
            while not stopped and len(pending) < config.parallel_candidates \
                    and len(rows) + len(pending) < config.num_candidates:
                slot = next_slot()
                if slot is None:
                    break
                index, cell, seed_id, seed_dna = slot
                done.add(index)
                pending[pool.submit(build_candidate, index, seed_id, seed_dna, config,
                                    the_roles, farm, work)] = cell.key
            if not pending:
                break
            finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                key = pending.pop(fut)
                row = fut.result()
                with lock:
                    rows.append(row)
                    tried[key] = tried.get(key, 0) + 1
                    if row["status"] == "accepted":
                        accepted[key] = accepted.get(key, 0) + 1
                    with manifest.open("a") as f:
                        f.write(json.dumps(row, sort_keys=True) + "\n")
                bar.update(1)
                bar.set_postfix(accepted=sum(accepted.values()))
                endpoint_fails = endpoint_fails + 1 if row.get("llm_endpoint_failed") else 0
                if endpoint_fails >= int(config.llm.get("max_endpoint_failures", 2)) and not stopped:
                    stopped, code = (f"the LLM endpoint failed {endpoint_fails} candidates in a "
                                     f"row ({row['details'][0][:200]})"), 1
    except KeyboardInterrupt:
        stopped, code = (f"interrupted; {len(pending)} candidate(s) in flight were dropped "
                         "(rerun the same command to resume)"), 130
        pool.shutdown(wait=False, cancel_futures=True)
    finally:
        bar.close()
        if own_farm:
            farm.close()
        if code == 130:  # in-flight candidates die with the farm; wait briefly, keep none
            cf.wait(list(pending), timeout=30)
        pool.shutdown(wait=code != 130, cancel_futures=True)
        shutil.rmtree(work / "staging", ignore_errors=True)
    elapsed = time.perf_counter() - start
    runstate.write_manifest(manifest, rows)
    accepted_ids = sorted(r["task_id"] for r in rows if r["status"] == "accepted")
    (work / "split.json").write_text(dumps_json(split_ids(accepted_ids, config.validation_fraction,
                                                          config.seed)))
    summary = summarize(sorted(rows, key=lambda r: r["index"]), elapsed, run_cells,
                        float(config.verify.span_sd), stopped)
    (work / "summary.json").write_text(dumps_json(summary))
    printer(format_summary(summary))
    if code:
        raise _fail(stopped, code)
    return summary
