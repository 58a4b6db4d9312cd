"""Seeds -> N candidate tasks -> verified tasks, in parallel, with a manifest.

Each candidate i takes seed `seeds[i % len(seeds)]` and random seed `config.seed * 1_000_003 + i`,
so a candidate's task depends on (config.seed, i) only, never on scheduling. Its four roles run
in order (strategist, developer, writer, leaderboard in the farm, MLOps), the task is saved to a
staging folder, regenerated once more from the same seed, and verified; accepted tasks move to
`<workdir>/tasks/<task_id>`, and every candidate gets one manifest line saying what happened.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import ml_collections

from sandmle.envgen import llm, roles
from sandmle.envgen.verify import Reason, Rejection, VerifyConfig, verify_task
from sandmle.tasks.task import TaskError, csv_bytes, dumps_json, save_task, tree_bytes

GENERATOR_VERSION = "sandmle-envgen/1"


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
        dna = the_roles.strategist.propose(seed_dna, rng_seed)
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
        grading = the_roles.mlops.build_grading(dna, spec, refs, sample_score)
        provenance = {"seed_id": seed_id, "generator_version": GENERATOR_VERSION,
                      "random_seed": rng_seed, "scale": config.scale,
                      "roles": dict(config.roles)}
        stage = "save"
        task = save_task(scratch / task_id, generated, grading, dna, provenance, description)
        stage = "verify"
        t0 = time.perf_counter()
        regen_dna = the_roles.strategist.propose(seed_dna, rng_seed)
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


def summarize(rows: list[dict], elapsed_s: float) -> dict:
    """Counts by status, reason, modality and task type, and throughput."""
    accepted = [r for r in rows if r["status"] == "accepted"]
    minutes = max(elapsed_s, 1e-9) / 60
    return {
        "candidates": len(rows), "accepted": len(accepted), "rejected": len(rows) - len(accepted),
        "elapsed_s": round(elapsed_s, 1),
        "tasks_per_minute": round(len(accepted) / minutes, 2),
        "candidates_per_minute": round(len(rows) / minutes, 2),
        "rejections_by_reason": dict(sorted(collections.Counter(
            r["reason"] for r in rows if r["status"] != "accepted").items())),
        "accepted_by_modality": dict(sorted(collections.Counter(
            str(r.get("modality")) for r in accepted).items())),
        "accepted_by_task_type": dict(sorted(collections.Counter(
            str(r.get("task_type")) for r in accepted).items())),
    }


def format_summary(summary: dict) -> str:
    lines = [f"envgen: {summary['accepted']} accepted / {summary['candidates']} candidates in "
             f"{summary['elapsed_s']} s  ->  {summary['tasks_per_minute']} tasks/minute "
             f"({summary['candidates_per_minute']} candidates/minute)",
             "  accepted: " + str(summary["accepted"])]
    for reason, count in summary["rejections_by_reason"].items():
        lines.append(f"  rejected ({reason}): {count}")
    lines.append("  by modality: " + ", ".join(f"{k}={v}" for k, v in summary["accepted_by_modality"].items()))
    lines.append("  by task type: " + ", ".join(f"{k}={v}" for k, v in summary["accepted_by_task_type"].items()))
    return "\n".join(lines)


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


def run_envgen(config: ml_collections.ConfigDict, workdir: str, farm: Any = None,
               progress: bool = True, printer: Callable[[str], None] = print) -> dict:
    """Generates `config.num_candidates` candidates; writes tasks/, manifest.jsonl, split.json
    and summary.json under `workdir`; prints and returns the summary."""
    work = Path(workdir)
    (work / "tasks").mkdir(parents=True, exist_ok=True)
    seeds = _load_seeds(config)
    own_farm = farm is None
    farm = make_farm(config) if own_farm else farm
    the_roles = make_roles(config)
    rows: list[dict] = []
    lock = threading.Lock()
    manifest = work / "manifest.jsonl"
    manifest.write_text("")
    start = time.perf_counter()
    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.num_candidates, desc="envgen", disable=not progress, unit="task")
        with cf.ThreadPoolExecutor(max_workers=config.parallel_candidates) as pool:
            pending: set[cf.Future] = set()
            next_index = 0

            def enough() -> bool:
                accepted = sum(r["status"] == "accepted" for r in rows)
                return bool(config.target_accepted) and accepted >= config.target_accepted

            while next_index < config.num_candidates or pending:
                while (next_index < config.num_candidates and len(pending) < config.parallel_candidates
                       and not enough()):
                    seed_id, seed_dna = seeds[next_index % len(seeds)]
                    pending.add(pool.submit(build_candidate, next_index, seed_id, seed_dna, config,
                                            the_roles, farm, work))
                    next_index += 1
                if not pending:
                    break
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    row = fut.result()
                    with lock:
                        rows.append(row)
                        with manifest.open("a") as f:
                            f.write(json.dumps(row, sort_keys=True) + "\n")
                    bar.update(1)
                    bar.set_postfix(accepted=sum(r["status"] == "accepted" for r in rows))
        bar.close()
    finally:
        if own_farm:
            farm.close()
        shutil.rmtree(work / "staging", ignore_errors=True)
    elapsed = time.perf_counter() - start
    rows.sort(key=lambda r: r["index"])
    manifest.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    accepted = [r["task_id"] for r in rows if r["status"] == "accepted"]
    (work / "split.json").write_text(dumps_json(split_ids(accepted, config.validation_fraction, config.seed)))
    summary = summarize(rows, elapsed)
    (work / "summary.json").write_text(dumps_json(summary))
    printer(format_summary(summary))
    return summary
