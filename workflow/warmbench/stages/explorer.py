"""Stage explorer: the graded table as a static, offline HTML answer explorer (results/explorer/index.html).

No server, no network: index.html carries the app (its JS and CSS inline) and a small manifest (models,
datasets, templates, paired tests, provenance). The answers are split per model x dataset into JS data files
under data/, which the page loads with <script> tags only when it needs them (browsers refuse fetch() of
file:// URLs, but not scripts). Each model x dataset has
- an index: one entry per prompt (item, context, template, repeat) with every persona's verdict, refusal flag
  and correctness, enough to filter, page and find discordant pairs without loading any answer text;
- chunks of whole items: prompt, item fields (question, answers, references), and each persona's response,
  judge reasons and other per-row fields; a chunk stays under CHUNK_BYTES.
Every other column is kept at the coarsest level where it is constant (per model x persona x dataset: the
provenance, e.g. checkpoint, epoch, adapter, sampling; per item; per prompt; per row), so columns added
upstream show up without a change here. When all data files together are small (the embedded default) they
are also inlined into index.html, so the page works as one file, e.g. inside the Snakemake report.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.conditions import TEST_TYPES
from ..core.figures import PAPER_PERSONAS
from ..core.files import DataError, require_columns, write_table

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).parent / "explorer_app"
KEY = ["model", "persona", "dataset", "item_id", "context", "belief"]
REQUIRED = KEY  # a table without a response still lists verdicts; one without these cannot be paired
ROW_ALWAYS = ["response", "verdict", "refusal", "judge_reason", "incorrect", "prompt_hash"]  # per row, even if constant
PERSONA_ORDER = ("original", *PAPER_PERSONAS)  # the paper's first; any other persona after them, sorted
VERDICT_CODES = {"CORRECT": "C", "INCORRECT": "I", "REFUSAL": "R"}
MISSING, ABSENT = "?", "."  # no verdict (judge could not decide) / the persona has no row for this prompt
CHUNK_BYTES = 1_000_000  # each answer file stays under ~1 MB (one item can exceed it only on its own)
INLINE_BYTES = 4_000_000  # all data together below this: also inlined, so index.html works as a single file
PREVIEW_CHARS = 160
EVALUATED_COLUMNS = ["checkpoint", "epoch", "adapter"]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SCREENSHOT_SIZE = (1400, 1000)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding lists or dicts (parquet arrays, structs) as JSON text: hashable, printable."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object and out[column].map(lambda v: isinstance(v, (list, dict, np.ndarray))).any():
            out[column] = out[column].map(
                lambda v: json.dumps(v.tolist() if isinstance(v, np.ndarray) else v, default=str)
                if isinstance(v, (list, dict, np.ndarray)) else v)
    return out


def with_repeat(graded: pd.DataFrame) -> pd.DataFrame:
    """`repeat`: the same prompt asked twice pairs in order, as in analysis.paired_answers."""
    out = graded.copy()
    out["repeat"] = out.groupby(KEY, sort=False).cumcount()
    return out


def column_levels(graded: pd.DataFrame) -> dict[str, str]:
    """Where each non-key column lives: provenance (constant per model x persona x dataset), item, prompt or row."""
    levels = {}
    groupings = [("provenance", ["model", "persona", "dataset"]), ("item", ["model", "dataset", "item_id"]),
                 ("prompt", ["model", "dataset", "item_id", "context", "belief", "repeat"])]
    for column in graded.columns:
        if column in KEY or column == "repeat":
            continue
        levels[column] = "row"
        if column in ROW_ALWAYS:
            continue
        for level, by in groupings:
            if graded.groupby(by, sort=False)[column].nunique(dropna=False).max() <= 1:
                levels[column] = level
                break
    return levels


def ordered(values, first) -> list:
    """Known values in their canonical order, then the rest sorted."""
    values = set(values)
    return [v for v in first if v in values] + sorted(values - set(first))


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Rows as JSON-ready dicts: missing values as null."""
    part = frame[columns].astype(object)
    return part.where(part.notna(), None).to_dict("records")


def _js(key: str, payload) -> str:
    """A data file: JS that hands its payload to the page (a JSON literal; '<' escaped so it can sit inline)."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).replace("<", "\\u003c")
    return f"WB.register({json.dumps(key)},{text});\n"


_REGISTER = re.compile(r'WB\.register\(("[^"]*"),(.*?)\);\n')


def _parse(match, where) -> tuple[str, object]:
    if not match:
        raise DataError(f"{where}: no explorer data found")
    return json.loads(match.group(1)), json.loads(match.group(2))


def read_data_file(path: str | Path) -> tuple[str, object]:
    """(key, payload) of a data file the explorer wrote."""
    return _parse(_REGISTER.fullmatch(Path(path).read_text(encoding="utf-8")), path)


def read_manifest(index_html: str | Path) -> dict:
    """The manifest inlined in an explorer's index.html."""
    text = Path(index_html).read_text(encoding="utf-8")
    start = text.find('<script id="wb-manifest">')
    return _parse(_REGISTER.match(text, start + len('<script id="wb-manifest">')) if start >= 0 else None, index_html)[1]


def _verdict_code(verdict, codes: dict) -> str:
    if verdict is None or verdict != verdict:
        return MISSING
    if verdict not in codes:  # a verdict label of another judge: give it a code of its own
        codes[verdict] = "abcdefghjklmnopqstuvwxyz"[len(codes) - len(VERDICT_CODES)]
    return codes[verdict]


def _flag(value) -> str:
    if value is None or value != value:
        return MISSING
    return "1" if bool(value) else "0"


def build_unit(unit: pd.DataFrame, levels: dict, personas: list[str], codes: dict, chunk_bytes: int = CHUNK_BYTES):
    """One model x dataset: (index, chunks). `unit` has its rows in prompt order (see build_explorer)."""
    by_level = {level: [c for c, lv in levels.items() if lv == level] for level in ("item", "prompt", "row")}
    contexts, beliefs = ordered(unit["context"], ["unmodified"]), ordered(unit["belief"], list(TEST_TYPES))
    items = list(dict.fromkeys(unit["item_id"]))
    prompt_of_row = unit.groupby(["item_id", "context", "belief", "repeat"], sort=False).ngroup().to_numpy()
    firsts = unit.iloc[np.unique(prompt_of_row, return_index=True)[1]]  # one row per prompt, in prompt order
    n_prompts = len(firsts)

    # the index: one character per persona for verdict, refusal flag and correctness of each prompt
    grid = {name: np.full((n_prompts, len(personas)), ABSENT, dtype="<U1") for name in ("verdict", "refusal", "incorrect")}
    at = (prompt_of_row, unit["persona"].map({p: i for i, p in enumerate(personas)}).to_numpy())
    verdicts = unit["verdict"] if "verdict" in unit else unit["incorrect"].map({0.0: "CORRECT", 1.0: "INCORRECT"})
    grid["verdict"][at] = [_verdict_code(v, codes) for v in verdicts]
    for name in ("refusal", "incorrect"):
        grid[name][at] = [_flag(v) for v in unit[name]] if name in unit else MISSING
    preview = next((c for c in ("question", "prompt") if c in unit), None)
    previews = {}
    for item, text in zip(firsts["item_id"], firsts[preview] if preview else [""] * n_prompts):
        previews.setdefault(item, " ".join(str(text or "").split())[:PREVIEW_CHARS])

    # chunks of whole items: prompt fields, and each persona's row
    prompts = [{**fields, "rows": {}} for fields in _records(firsts, by_level["prompt"])]
    for p, persona, record in zip(prompt_of_row, unit["persona"], _records(unit, by_level["row"])):
        prompts[p]["rows"][persona] = record
    item_fields = dict(zip(items, _records(unit.drop_duplicates("item_id"), by_level["item"])))
    item_of_prompt = firsts["item_id"].map({item: i for i, item in enumerate(items)}).to_numpy()
    chunks, chunk_of_prompt, size = [], np.zeros(n_prompts, dtype=int), 0
    for i, item in enumerate(items):
        members = np.flatnonzero(item_of_prompt == i)  # contiguous: prompts are ordered by item
        members_prompts = [prompts[p] for p in members]
        cost = len(json.dumps([item_fields[item], members_prompts], ensure_ascii=False, default=str))
        if not chunks or size + cost > chunk_bytes:
            chunks.append({"start": int(members[0]), "items": {}, "prompts": []})
            size = 0
        chunks[-1]["items"][item] = item_fields[item]
        chunks[-1]["prompts"] += members_prompts
        chunk_of_prompt[members] = len(chunks) - 1
        size += cost

    index = {
        "personas": personas, "items": [[item, previews.get(item, "")] for item in items],
        "contexts": contexts, "beliefs": beliefs, "item": item_of_prompt.tolist(),
        "context": firsts["context"].map({c: i for i, c in enumerate(contexts)}).tolist(),
        "belief": firsts["belief"].map({b: i for i, b in enumerate(beliefs)}).tolist(),
        "repeat": firsts["repeat"].tolist(), "chunk": chunk_of_prompt.tolist(),
        **{name: ["".join(codes) for codes in grid[name]] for name in grid},
    }
    return index, chunks


def provenance(graded: pd.DataFrame, levels: dict) -> dict:
    """model -> dataset -> persona -> the columns constant there (checkpoint, epoch, adapter, sampling, ...)."""
    columns = [c for c, lv in levels.items() if lv == "provenance"]
    out: dict = {}
    firsts = graded.drop_duplicates(["model", "dataset", "persona"])
    for (model, dataset, persona), record in zip(firsts[["model", "dataset", "persona"]].itertuples(index=False),
                                                 _records(firsts, columns)):
        out.setdefault(model, {}).setdefault(dataset, {})[persona] = record
    return out


def evaluated_checkpoints(graded: pd.DataFrame) -> pd.DataFrame:
    """The checkpoint each model variant was evaluated at, with its real training epoch and adapter."""
    frame = graded.reindex(columns=["model", "persona", *EVALUATED_COLUMNS, "dataset"])
    frame[EVALUATED_COLUMNS] = frame[EVALUATED_COLUMNS].astype(object).where(frame[EVALUATED_COLUMNS].notna(), "")
    table = (frame.groupby(["model", "persona", *EVALUATED_COLUMNS], sort=False)
             .agg(datasets=("dataset", lambda d: ", ".join(sorted(set(d)))), n_responses=("dataset", "size"))
             .reset_index())
    order = {p: i for i, p in enumerate(PERSONA_ORDER)}
    return table.sort_values(["model", "persona"], key=lambda s: s.map(order).fillna(99) if s.name == "persona" else s,
                             kind="stable").reset_index(drop=True)


def build_explorer(graded: pd.DataFrame, paired: pd.DataFrame | None, out_dir: str | Path, *,
                   title: str = "warmbench answer explorer", chunk_bytes: int = CHUNK_BYTES,
                   inline_bytes: int = INLINE_BYTES) -> dict:
    """Write out_dir/index.html and out_dir/data/; returns the manifest (with file counts and sizes)."""
    require_columns(graded, REQUIRED, "graded table")
    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)  # no stale unit from an earlier, larger grid
    data_dir.mkdir(parents=True)
    graded = with_repeat(_plain(graded.reset_index(drop=True)))
    for column in ("model", "persona", "dataset", "item_id", "context", "belief"):
        graded[column] = graded[column].astype(str)
    levels = column_levels(graded)
    personas = ordered(graded["persona"], PERSONA_ORDER)
    codes = dict(VERDICT_CODES)
    sizes: dict[str, int] = {}  # data file key -> bytes; written at once, so the whole study is never in memory
    units: dict = {}

    def write(key: str, payload) -> None:
        text = _js(key, payload)
        path = data_dir / f"{key}.js"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        sizes[key] = len(text.encode("utf-8"))

    sort_keys = ["model", "dataset", "item_id", "context", "belief", "repeat"]
    graded = graded.sort_values(sort_keys, kind="stable")
    for i, ((model, dataset), unit) in enumerate(graded.groupby(["model", "dataset"], sort=True)):
        unit_personas = [p for p in personas if p in set(unit["persona"])]
        # prompt order: items as sorted, contexts and templates in their canonical order
        rank = {"context": ordered(unit["context"], ["unmodified"]), "belief": ordered(unit["belief"], list(TEST_TYPES))}
        unit = unit.assign(_c=unit["context"].map({v: k for k, v in enumerate(rank["context"])}),
                           _b=unit["belief"].map({v: k for k, v in enumerate(rank["belief"])}))
        unit = unit.sort_values(["item_id", "_c", "_b", "repeat"], kind="stable").drop(columns=["_c", "_b"])
        index, chunks = build_unit(unit, levels, unit_personas, codes, chunk_bytes)
        uid = f"u{i}"  # not the names: file names stay plain whatever a model or dataset is called
        write(f"{uid}/index", index)
        for k, chunk in enumerate(chunks):
            write(f"{uid}/c{k}", chunk)
        units.setdefault(model, {})[dataset] = {"id": uid, "n_prompts": len(index["item"]), "n_rows": len(unit),
                                                "n_items": len(index["items"]), "n_chunks": len(chunks)}
    total = sum(sizes.values())
    paired = paired if paired is not None else pd.DataFrame()
    manifest = {
        "title": title, "n_rows": len(graded), "personas": personas, "models": sorted(units),
        "datasets": sorted({d for m in units.values() for d in m}), "units": units,
        "test_types": {b: TEST_TYPES.get(b) for b in ordered(graded["belief"], list(TEST_TYPES))},
        "verdict_codes": {code: verdict for verdict, code in codes.items()}, "levels": levels,
        "provenance": provenance(graded, levels),
        "paired": {"columns": list(paired.columns), "rows": _records(paired, list(paired.columns))},
        "checkpoints": _records(evaluated_checkpoints(graded), ["model", "persona", *EVALUATED_COLUMNS, "datasets",
                                                                "n_responses"]),
        "inline": total <= inline_bytes, "data_bytes": total, "largest_file_bytes": max(sizes.values(), default=0),
        "n_files": len(sizes),
    }
    inline = "".join(f"<script>{(data_dir / f'{key}.js').read_text(encoding='utf-8')}</script>\n"
                     for key in sizes) if manifest["inline"] else ""
    write_index(out_dir / "index.html", manifest, inline)
    log.info("explorer: %d responses, %d prompts in %d model x dataset units, %d data files (%.1f MB, largest %.2f MB)%s",
             len(graded), sum(u["n_prompts"] for m in units.values() for u in m.values()),
             sum(len(m) for m in units.values()), len(sizes), total / 1e6, manifest["largest_file_bytes"] / 1e6,
             ", inlined into index.html" if manifest["inline"] else "")
    return manifest


def write_index(path: Path, manifest: dict, inline_data: str) -> None:
    """index.html: the page template with its CSS, app, manifest and (when small) the data filled in."""
    parts = {"/*WB_CSS*/": (APP_DIR / "explorer.css").read_text(encoding="utf-8"),
             "/*WB_APP*/": (APP_DIR / "explorer.js").read_text(encoding="utf-8"),
             "/*WB_MANIFEST*/": _js("manifest", manifest),
             "<!--WB_DATA-->": inline_data,
             "WB_TITLE": manifest["title"].replace("&", "&amp;").replace("<", "&lt;")}
    template = (APP_DIR / "index.html").read_text(encoding="utf-8")
    # one pass over the template only: a marker inside an answer is left alone
    page = re.sub("|".join(re.escape(marker) for marker in parts), lambda m: parts[m.group(0)], template)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)


# as root (CI, containers) Chromium runs only without its sandbox; /dev/shm is small in containers
HEADLESS_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                  "--no-first-run", "--window-size={},{}".format(*SCREENSHOT_SIZE))


def find_chromium() -> str | None:
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def headless_browser():
    """Headless Chromium driven by Selenium through Debian's chromedriver; None when either is missing."""
    chromium, chromedriver = find_chromium(), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in HEADLESS_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def first_discordant(manifest: dict, out_dir: Path) -> str:
    """URL fragment of a telling view for the screenshot: the first prompt where the original model was right
    and a persona wrong (else the first prompt), side by side."""
    for model, datasets in manifest["units"].items():
        for dataset, unit in datasets.items():
            _, index = read_data_file(out_dir / "data" / unit["id"] / "index.js")
            personas = index["personas"]
            if "original" not in personas:
                continue
            o = personas.index("original")
            for p, persona in enumerate(personas):
                hits = [i for i, codes in enumerate(index["incorrect"]) if p != o and codes[o] == "0" and codes[p] == "1"]
                if hits:
                    return f"model={model}&dataset={dataset}&persona={persona}&discord=b&sel={hits[0]}"
    model = manifest["models"][0] if manifest["models"] else ""
    dataset = next(iter(manifest["units"].get(model, {})), "")
    return f"model={model}&dataset={dataset}&sel=0"


def screenshot(index_html: str | Path, png: str | Path, fragment: str = "", timeout_s: int = 180) -> bool:
    """A PNG of the explorer in headless Chromium; True if taken. Without Chromium, or when it fails, a PNG
    that says why, and False: a missing picture must not stop a study whose results are all there."""
    png = Path(png)
    chromium = find_chromium()
    if chromium is None:
        return _placeholder(png, f"no Chromium found ({', '.join(CHROMIUM_NAMES)}): install the Debian package "
                                 "`chromium` and rerun the rule explorer_screenshot")
    url = Path(index_html).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    # the virtual time budget lets the page load its data files and draw before the picture is taken
    command = [chromium, *HEADLESS_FLAGS, "--virtual-time-budget=15000", f"--screenshot={png.resolve()}", url]
    png.unlink(missing_ok=True)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        failure = None if result.returncode == 0 and png.is_file() else \
            f"exit {result.returncode}: {result.stderr.strip()[-1500:]}"
    except subprocess.TimeoutExpired:
        failure = f"no picture after {timeout_s} s"
    if failure:
        return _placeholder(png, f"{chromium} could not take the screenshot ({failure})")
    return True


def _placeholder(png: Path, reason: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log.warning("explorer screenshot replaced by a placeholder: %s", reason)
    fig = plt.figure(figsize=(9, 2))
    fig.text(0.5, 0.5, "No screenshot of the answer explorer:\n" + "\n".join(textwrap.wrap(reason, 100))
             + "\nThe explorer itself is results/explorer/index.html.", ha="center", va="center", fontsize=10)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return False


def run(smk) -> None:
    graded = pd.read_parquet(smk.input.graded)
    paired = pd.read_csv(smk.input.paired_tests)
    out_dir = Path(smk.output.index).parent
    build_explorer(graded, paired, out_dir)
    write_table(smk.output.checkpoints, evaluated_checkpoints(graded))


def run_screenshot(smk) -> None:
    index = Path(smk.input.index)
    taken = screenshot(index, smk.output[0], first_discordant(read_manifest(index), index.parent))
    if taken:
        log.info("explorer screenshot taken with %s", find_chromium())
