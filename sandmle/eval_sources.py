"""What an evaluation runs: its task set and its policy (checkpoint, HF dir, expert, endpoint).

`resolve_tasks(spec, split, num_tasks, workdir)` turns `config.tasks.dir` (comma-separated
paths) into task directories: an envgen workdir gives its split, a folder of tasks its
tasks, a task itself, and a folder of MLE-bench prepared competitions is imported once into
`<workdir>/mlebench_tasks` (sandmle.tasks.mlebench). `build_source(config, workdir, tasks)`
builds the policy backend with its tokenizer and the agent settings it runs under, plus an
`identity` that an evaluation workdir's results are bound to.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from sandmle.errors import UserError

SPLITS = ("validation", "train", "all")
KINDS = ("expert", "checkpoint", "hf", "openai")


def _is_task(path: Path) -> bool:
    return (path / "public" / "description.md").is_file() and (path / "private").is_dir()


def _mlebench_tasks(root: Path, workdir: Path | None) -> list[str]:
    from sandmle.tasks import mlebench
    comps = mlebench.find_competitions(root)
    if not comps or workdir is None:  # None: only check that there is something
        return [str(c) for c in comps]
    out_dir = workdir / "mlebench_tasks"
    out: list[str] = []
    for comp in comps:
        task = out_dir / comp.name
        if not _is_task(task):  # imported by an earlier run of this evaluation: reused
            try:
                mlebench.import_competition(comp, out_dir, overwrite=True)
            except mlebench.MLEBenchImportError as e:
                raise UserError(f"task set {root}: {e}") from None
        out.append(str(task))
    return out


def _tasks_of(path: Path, split: str, workdir: Path | None) -> list[str]:
    if not path.exists():
        raise UserError(f"task set {path}: no such file or directory")
    if not path.is_dir():
        raise UserError(f"task set {path}: not a directory")
    if (path / "split.json").is_file():
        from sandmle import tasksets
        ts = tasksets.load(path)
        return ts.train + ts.validation if split == "all" else list(getattr(ts, split))
    if _is_task(path):
        return [str(path)]
    tasks = [str(p) for p in sorted(path.iterdir()) if p.is_dir() and _is_task(p)]
    return tasks or _mlebench_tasks(path, workdir)


def resolve_tasks(spec: str, split: str, num_tasks: int, workdir: str | Path | None
                  ) -> list[str]:
    """Task directories of an evaluation, in a fixed order (see the module docstring).
    `workdir` None checks the task set without importing MLE-bench competitions."""
    if split not in SPLITS:
        raise UserError(f"config.tasks.split must be one of {', '.join(SPLITS)}, got {split!r}")
    paths = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not paths:
        raise UserError("no task set: give --tasks=DIR (an envgen workdir, a folder of tasks, "
                        "a task directory, or MLE-bench prepared competitions)")
    tasks: list[str] = []
    for p in paths:
        tasks += _tasks_of(Path(p).resolve(), split, None if workdir is None else Path(workdir))
    seen: dict[str, str] = {}
    for t in tasks:
        name = Path(t).name
        if name in seen and seen[name] != t:
            raise UserError(f"task set {spec}: two tasks are named {name!r} ({seen[name]}, {t})")
        seen[name] = t
    tasks = list(dict.fromkeys(tasks))
    if num_tasks:
        tasks = tasks[:num_tasks]
    if not tasks:
        raise UserError(f"task set {spec} is empty: no task directories (public/description.md "
                        f"+ private/) were found there")
    return tasks


@dataclasses.dataclass
class Source:
    """A policy backend ready for `Rollouts`, and what an evaluation of it is bound to."""

    name: str
    identity: dict[str, Any]
    policy: Any
    tokenizer: Any
    agent: ml_collections.ConfigDict
    rollout: ml_collections.ConfigDict
    close: Callable[[], None] = lambda: None


def _section(d: dict, name: str, fallback: ml_collections.ConfigDict
             ) -> ml_collections.ConfigDict:
    if name not in d:
        return fallback
    merged = fallback.to_dict()
    merged.update(d[name])
    return ml_collections.ConfigDict(merged)


def _test_tokenizer(config: ml_collections.ConfigDict, workdir: Path, tasks: list[str]) -> Any:
    from sandmle import build, train
    return build.tokenizer(config, workdir, train.tokenizer_corpus(tasks, config))


def find_checkpoint(path: str) -> tuple[Path, Path, int | None]:
    """(run dir, checkpoints dir, step named by the path or None) of a checkpoint path: a
    train workdir, its checkpoints/ folder, or one step folder."""
    from sandmle import checkpoint
    p = Path(path).resolve()
    if not p.exists():
        raise UserError(f"no checkpoint at {p}: no such file or directory")
    if (p / "checkpoints").is_dir():
        return p, p / "checkpoints", None
    if p.name.isdigit() and (p / "train_state").is_dir():
        return p.parent.parent, p.parent, int(p.name)
    if p.is_dir() and checkpoint.list_step_dirs(p):
        return p.parent, p, None
    raise UserError(f"{p} holds no checkpoint (give a train workdir, its checkpoints/ folder "
                    f"or one step folder)")


def restore_policy_params(ckpt_dir: Path, step: int | None, model: Any) -> int:
    """Restores only `params['policy']` of a train-state checkpoint into `model` (the
    optimizer state is never read); returns the step. Without `step`, the newest that
    restores (a corrupt newer one is skipped with a warning)."""
    import jax
    import orbax.checkpoint as ocp
    from flax import nnx

    from sandmle import checkpoint
    target = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    abstract = checkpoint.abstract_like(target)
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract)
    steps = [step] if step is not None else list(reversed(checkpoint.list_step_dirs(ckpt_dir)))
    if not steps:
        raise UserError(f"{ckpt_dir} holds no finished checkpoint step")
    errors = []
    for s in steps:
        folder = ckpt_dir / str(s) / "train_state"
        if not folder.is_dir():
            raise UserError(f"no checkpoint step {s} in {ckpt_dir} (steps: "
                            f"{checkpoint.list_step_dirs(ckpt_dir)})")
        try:
            out = ocp.PyTreeCheckpointer().restore(folder, args=ocp.args.PyTreeRestore(
                item={"params": {"policy": abstract}},
                restore_args={"params": {"policy": restore_args}}, partial_restore=True))
            params = jax.block_until_ready(out["params"]["policy"])
        except Exception as e:  # noqa: BLE001 -- any reader error: this step is unusable
            errors.append(f"step {s}: {type(e).__name__}: {str(e)[:200]}")
            logging.warning("checkpoint step %d in %s does not restore (%s)", s, ckpt_dir, e)
            continue
        nnx.update(model, params)
        return int(s)
    raise UserError(f"checkpoint in {ckpt_dir} could not be restored ({'; '.join(errors)})")


def load_checkpoint(path: str, step: int | None, mesh: Any, rules: Any
                    ) -> tuple[Any, Any, dict, Path, int]:
    """(model, tokenizer, the run's config dict, checkpoints dir, step) of a train checkpoint:
    the run's tokenizer and model config, the policy parameters of `step` (None: the step the
    path names, else the newest that restores)."""
    from sandmle import build, config_lib
    run_dir, ckpt_dir, named = find_checkpoint(path)
    try:
        run = config_lib.read_config_json(run_dir)
    except (OSError, ValueError) as e:
        raise UserError(f"checkpoint {path}: its run's config.json in {run_dir} is missing "
                        f"or unreadable ({e})") from None
    tok_cfg = ml_collections.ConfigDict({"tokenizer": run.get("tokenizer", {"path": ""})})
    if not tok_cfg.tokenizer.get("path"):
        tok_cfg.tokenizer.path = str(run_dir / build.TOKENIZER_DIR)
    tok = build.tokenizer(tok_cfg, run_dir)
    model = build.policy_model(ml_collections.ConfigDict(run), tok.vocab_size, mesh, rules)
    step = restore_policy_params(ckpt_dir, named if named is not None else step, model)
    return model, tok, run, ckpt_dir, step


def load_hf(path: str, tokenizer_path: str, mesh: Any, rules: Any,
            overrides: dict | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a Hugging Face Qwen3 directory (its own tokenizer unless
    `tokenizer_path`)."""
    from sandmle import build
    from sandmle.models import hf
    p = Path(path).resolve()
    if not (p / "config.json").is_file():
        raise UserError(f"no Hugging Face model at {p} (it needs config.json and "
                        f"model.safetensors)")
    tok = build.tokenizer(ml_collections.ConfigDict(
        {"tokenizer": {"path": tokenizer_path or str(p)}}), p)
    try:
        model = hf.from_pretrained(p, mesh=mesh, rules=rules, **(overrides or {}))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"Hugging Face model {p}: {e}") from None
    return model, tok


def _checkpoint_source(config: ml_collections.ConfigDict, workdir: Path) -> Source:
    from sandmle import build
    mesh, rules = build.mesh_and_rules(config)
    step = None if config.policy.step < 0 else int(config.policy.step)
    model, tok, run, ckpt_dir, step = load_checkpoint(config.policy.path, step, mesh, rules)
    own = not config.policy.run_settings
    agent = config.agent if own else _section(run, "agent", config.agent)
    rollout = config.rollout if own else _section(run, "rollout", config.rollout)
    policy_cfg = ml_collections.ConfigDict({
        "sampling": config.sampling if own else _section(run, "sampling", config.sampling),
        "rollout": rollout, "agent": agent, "seed": config.seed})
    policy = build.sampling_policy(policy_cfg, model, tok, mesh, rules)
    identity = {"kind": "checkpoint", "path": str(ckpt_dir), "step": step,
                "sampling": policy_cfg.sampling.to_dict()}
    return Source(f"checkpoint {ckpt_dir} step {step}", identity, policy, tok, agent, rollout)


def _hf_source(config: ml_collections.ConfigDict, workdir: Path) -> Source:
    from sandmle import build
    mesh, rules = build.mesh_and_rules(config)
    model, tok = load_hf(config.policy.path, config.tokenizer.path, mesh, rules,
                         config.model.overrides.to_dict())
    policy = build.sampling_policy(config, model, tok, mesh, rules)
    path = str(Path(config.policy.path).resolve())
    identity = {"kind": "hf", "path": path, "sampling": config.sampling.to_dict()}
    return Source(f"HF model {path}", identity, policy, tok, config.agent, config.rollout)


def _openai_source(config: ml_collections.ConfigDict, workdir: Path,
                   tasks: list[str]) -> Source:
    from sandmle.agent.policy import OpenAIPolicy
    from sandmle.sampling import config as sampling_config
    try:
        import openai
    except ImportError:
        raise UserError("the endpoint policy needs the openai client: "
                        "pip install 'sandmle[serve]'") from None
    url = _probe(config.policy.path, config.policy.api_key)
    client = openai.OpenAI(base_url=url, api_key=config.policy.api_key or "EMPTY",
                           timeout=config.policy.timeout_s,
                           max_retries=config.policy.max_retries)
    model = config.policy.model
    if not model:
        try:
            model = next(iter(client.models.list())).id
        except (openai.OpenAIError, StopIteration) as e:
            raise UserError(f"endpoint {url} lists no model ({e}); give "
                            f"--config.policy.model") from None
    tok = _test_tokenizer(config, workdir, tasks)
    policy = OpenAIPolicy(client, model, tok, sampling_config.sampling_params(config.sampling),
                          concurrency=config.policy.concurrency)
    identity = {"kind": "openai", "path": url, "model": model,
                "sampling": config.sampling.to_dict()}
    return Source(f"endpoint {url} ({model})", identity, policy, tok, config.agent,
                  config.rollout, close=policy.close)


def preflight(config: ml_collections.ConfigDict) -> None:
    """The checks an evaluation can make before it writes anything: the task set is not
    empty, the checkpoint or HF directory exists, the endpoint answers."""
    resolve_tasks(config.tasks.dir, config.tasks.split, config.tasks.num_tasks, None)
    kind, path = config.policy.kind, config.policy.path
    if kind in ("checkpoint", "hf"):
        check_model_path(kind, path)
    elif kind == "openai":
        _probe(path, config.policy.api_key)


def check_model_path(kind: str, path: str) -> None:
    """Refuses, before any model code loads, a checkpoint or HF path that holds no model."""
    if kind == "checkpoint":
        find_checkpoint(path)
    elif not (Path(path) / "config.json").is_file():
        raise UserError(f"no Hugging Face model at {Path(path).resolve()} (it needs "
                        f"config.json and model.safetensors)")


def _probe(url: str, api_key: str) -> str:
    from sandmle.envgen import llm
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UserError(f"config.policy.path {url!r} is not an http(s) base URL, e.g. "
                        f"http://127.0.0.1:8000/v1")
    try:
        llm.probe(ml_collections.ConfigDict({"base_url": url, "api_key": api_key,
                                             "timeout_s": 10.0, "probe_timeout_s": 10.0}))
    except llm.LLMError as e:
        raise UserError(f"endpoint {e}") from None
    return url


def build_source(config: ml_collections.ConfigDict, workdir: str | Path,
                 tasks: list[str]) -> Source:
    """The policy an evaluation runs (config.policy.kind), with its tokenizer."""
    from sandmle.agent import expert
    workdir = Path(workdir)
    kind = config.policy.kind
    if kind == "checkpoint":
        src = _checkpoint_source(config, workdir)
    elif kind == "hf":
        src = _hf_source(config, workdir)
    elif kind == "openai":
        src = _openai_source(config, workdir, tasks)
    else:
        tok = _test_tokenizer(config, workdir, tasks)
        pol = expert.ExpertPolicy(tok, tools=tuple(config.agent.tools), seed=config.seed,
                                  bug_rate=config.policy.expert_bug_rate)
        src = Source("scripted expert", {"kind": "expert",
                                         "bug_rate": config.policy.expert_bug_rate},
                     pol, tok, config.agent, config.rollout)
    src.identity.update(seed=config.seed, agent=json.loads(json.dumps(src.agent.to_dict())))
    return src
