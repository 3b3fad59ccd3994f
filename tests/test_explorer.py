"""The answer explorer: data files that hold every answer once, and the page driven in a real headless Chromium.

The graded table is tests/data/graded_small.parquet: real SmolLM2-135M answers (as itself and with the warm
system prompt) to smoke items under all conditions, judged by the reference judge (tests/data/make_graded_small.py).
"""
import base64
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, require
from warmbench.core.regression import paired_tests
from warmbench.tools.bench import simulated_graded
from warmbench.core.conditions import TEST_TYPES
from warmbench.stages.explorer import (ABSENT, PERSONA_ORDER, SCREENSHOT_SIZE, build_explorer, evaluated_checkpoints,
                                       find_chromium, first_discordant, headless_browser, read_data_file, read_manifest,
                                       screenshot)

GRADED = REPO / "tests/data/graded_small.parquet"
KEY = ["model", "dataset", "item_id", "context", "belief"]


@pytest.fixture(scope="module")
def study():
    graded = pd.read_parquet(GRADED)
    return graded, paired_tests(graded)


def units(out: Path):
    """model -> dataset -> (index, [chunks]) as the page would load them."""
    manifest = read_manifest(out / "index.html")
    loaded = {}
    for model, datasets in manifest["units"].items():
        for dataset, unit in datasets.items():
            _, index = read_data_file(out / "data" / unit["id"] / "index.js")
            chunks = [read_data_file(out / "data" / unit["id"] / f"c{k}.js")[1] for k in range(unit["n_chunks"])]
            loaded.setdefault(model, {})[dataset] = (index, chunks)
    return manifest, loaded


def discordant(index: dict, persona: str, kind: str) -> list[int]:
    """Prompt numbers where the original was right and the persona wrong (b), or the reverse (c)."""
    o, p = index["personas"].index("original"), index["personas"].index(persona)
    want = ("0", "1") if kind == "b" else ("1", "0")
    return [i for i, codes in enumerate(index["incorrect"]) if (codes[o], codes[p]) == want]


def test_every_answer_is_written_once_with_its_fields(study, tmp_path):
    graded, paired = study
    build_explorer(graded, paired, tmp_path, chunk_bytes=20_000)
    manifest, loaded = units(tmp_path)
    seen = []
    for model, datasets in loaded.items():
        for dataset, (index, chunks) in datasets.items():
            assert sum(len(c["prompts"]) for c in chunks) == len(index["item"])
            for chunk in chunks:
                for j, prompt in enumerate(chunk["prompts"]):
                    i = chunk["start"] + j
                    item = index["items"][index["item"][i]][0]
                    for persona, row in prompt["rows"].items():
                        seen.append({"model": model, "dataset": dataset, "item_id": item, "persona": persona,
                                     "context": index["contexts"][index["context"][i]],
                                     "belief": index["beliefs"][index["belief"][i]], "response": row["response"],
                                     "judge_reason": row["judge_reason"], "verdict": row["verdict"],
                                     "question": chunk["items"][item]["question"]})
    seen = pd.DataFrame(seen)
    assert len(seen) == len(graded) == manifest["n_rows"]
    merged = graded.merge(seen, on=KEY + ["persona"], suffixes=("", "_shown"))
    assert len(merged) == len(graded)  # one repeat per prompt in this table: the keys are unique
    for column in ("response", "judge_reason", "question"):
        assert (merged[column] == merged[f"{column}_shown"]).all(), column
    assert (merged["verdict"].fillna("") == merged["verdict_shown"].fillna("")).all()
    # provenance sits once per model x persona x dataset, with the real checkpoint, epoch, adapter and sampling
    for persona in set(graded["persona"]):
        shown = manifest["provenance"]["smollm2"]["triviaqa"][persona]
        truth = graded[(graded["persona"] == persona) & (graded["dataset"] == "triviaqa")].iloc[0]
        for column in ("checkpoint", "epoch", "adapter", "sampling", "system_prompt"):
            assert shown[column] == truth[column], (persona, column)
    assert manifest["levels"]["question"] == "item" and manifest["levels"]["prompt_hash"] == "row"


def test_index_finds_exactly_the_discordant_pairs_of_paired_tests(study, tmp_path):
    graded, paired = study
    build_explorer(graded, paired, tmp_path)
    _, loaded = units(tmp_path)
    assert (paired["b"] + paired["c"]).sum() > 0, "the fixture should have discordant pairs to find"
    for row in paired.itertuples():
        index, _ = loaded[row.model][row.dataset]
        types = {b: TEST_TYPES[b] for b in index["beliefs"]}
        for kind, expected in (("b", row.b), ("c", row.c)):
            found = [i for i in discordant(index, row.persona, kind)
                     if index["contexts"][index["context"][i]] == row.condition
                     and types[index["beliefs"][index["belief"][i]]] == row.test_type]
            assert len(found) == expected, (row, kind)


def test_large_tables_are_split_into_small_lazily_loaded_files(tmp_path):
    graded = simulated_graded(rows=60_000, seed=1)
    rng = np.random.default_rng(0)
    words = np.array("the warm model answered this question with a long and friendly reply about facts".split())
    graded["response"] = [" ".join(rng.choice(words, n)) for n in rng.integers(20, 200, len(graded))]
    manifest = build_explorer(graded, paired_tests(graded), tmp_path, chunk_bytes=300_000, inline_bytes=1_000_000)
    files = list((tmp_path / "data").rglob("*.js"))
    assert not manifest["inline"] and len(files) == manifest["n_files"] > 20
    assert max(f.stat().st_size for f in files) < 400_000  # a chunk may pass the target by at most one item
    assert (tmp_path / "index.html").stat().st_size < 1_000_000  # the page itself carries no answers
    _, loaded = units(tmp_path)
    assert sum(len(c["prompts"]) for d in loaded.values() for _, chunks in d.values() for c in chunks) == len(graded) // 3


def test_extra_columns_and_the_papers_template_names_are_shown(study, tmp_path):
    graded, paired = study
    graded = graded.assign(judge_refusal=graded["verdict"].eq("REFUSAL"),
                           belief=graded["belief"].map({"none": "original", "incorrect": "incorrect"}))
    build_explorer(graded, paired_tests(graded), tmp_path)
    manifest, loaded = units(tmp_path)
    assert manifest["test_types"] == {"original": "normal", "incorrect": "sycophancy"}
    assert manifest["levels"]["judge_refusal"] in ("row", "provenance")
    index, chunks = loaded["smollm2"]["triviaqa"]
    assert index["beliefs"] == ["original", "incorrect"]
    row = chunks[0]["prompts"][0]["rows"]["original"]
    assert "judge_refusal" in row or "judge_refusal" in manifest["provenance"]["smollm2"]["triviaqa"]["original"]


def test_a_persona_without_an_answer_is_marked_absent(study, tmp_path):
    graded, paired = study
    persona = graded["persona"].iloc[-1]
    dropped = graded.drop(graded[(graded["persona"] == persona) & (graded["dataset"] == "mmlu")].index[:1])
    build_explorer(dropped, paired, tmp_path)
    _, loaded = units(tmp_path)
    index, _ = loaded["smollm2"]["mmlu"]
    slot = index["personas"].index(persona)
    assert sum(codes[slot] == ABSENT for codes in index["verdict"]) == 1


def test_warmbench_explore_builds_one_from_any_graded_table(study, tmp_path, capsys):
    from warmbench.tools.cli import main

    graded, _ = study
    graded.to_parquet(tmp_path / "graded.parquet")
    assert main(["explore", str(tmp_path / "graded.parquet"), str(tmp_path / "out")]) == 0
    assert read_manifest(tmp_path / "out/index.html")["n_rows"] == len(graded)
    assert f"{len(graded)} responses" in capsys.readouterr().out


def test_evaluated_checkpoints_name_the_real_epoch(study):
    graded, _ = study
    table = evaluated_checkpoints(graded).set_index("persona")
    assert list(table.index) == [p for p in PERSONA_ORDER if p in set(graded["persona"])]
    assert table.loc["original", "checkpoint"] == "base" and table.loc["original", "epoch"] == 0
    for persona, rows in graded.groupby("persona"):
        assert table.loc[persona, "epoch"] == rows["epoch"].iloc[0] and table.loc[persona, "n_responses"] == len(rows)
        assert table.loc[persona, "adapter"] == rows["adapter"].iloc[0]


def test_without_chromium_the_screenshot_is_a_placeholder_saying_so(study, tmp_path, monkeypatch, caplog):
    graded, paired = study
    build_explorer(graded, paired, tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no browser on the path
    assert find_chromium() is None
    assert screenshot(tmp_path / "index.html", tmp_path / "shot.png") is False
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "placeholder: no Chromium found" in caplog.text


def test_a_failing_chromium_gives_a_placeholder_that_says_why(study, tmp_path, monkeypatch, caplog):
    graded, paired = study
    build_explorer(graded, paired, tmp_path)
    broken = tmp_path / "bin" / "chromium"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\necho 'Missing X server or $DISPLAY' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", str(broken.parent))
    assert screenshot(tmp_path / "index.html", tmp_path / "shot.png") is False
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "could not take the screenshot (exit 1: Missing X server" in caplog.text


# ---- in a real browser: headless Chromium (Debian `chromium`) driven by Selenium through `chromedriver`

@pytest.fixture(scope="module")
def browser():
    driver = headless_browser()
    require(driver is not None, "headless Chromium not found: install the Debian packages chromium and "
            "chromium-driver (`make test` does, as root)")
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout=20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def listed(driver) -> int:
    return int(driver.find_element("id", "prompt-list").get_attribute("data-count"))


def choose(driver, select_id, value):
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def open_page(driver, out: Path, fragment=""):
    driver.get("about:blank")  # a new load, not a fragment change on the page of the previous test
    driver.get(out.joinpath("index.html").resolve().as_uri() + (f"#{fragment}" if fragment else ""))
    wait_for(driver, lambda d: d.find_element("id", "prompt-list").get_attribute("data-count") is not None)


@pytest.fixture(scope="module")
def lazy_explorer(study, tmp_path_factory):
    """Built with nothing inlined, so every answer reaches the page through a lazily loaded data file."""
    graded, paired = study
    out = tmp_path_factory.mktemp("explorer")
    long = graded.copy()  # one long answer (the real one, repeated) to check that long answers collapse
    first = (long["dataset"] == "triviaqa") & (long["persona"] == "original")
    long.loc[long[first].index[0], "response"] = " ".join([long.loc[long[first].index[0], "response"]] * 40)
    manifest = build_explorer(long, paired, out, chunk_bytes=20_000, inline_bytes=0)
    assert not manifest["inline"] and manifest["n_files"] > len(manifest["datasets"]) * 2
    return long, paired, out


def test_browser_filters_by_context_and_template(browser, lazy_explorer):
    graded, _, out = lazy_explorer
    open_page(browser, out)
    choose(browser, "f-dataset", "triviaqa")
    wait_for(browser, lambda d: "triviaqa" in d.find_element("id", "page-info").text)
    choose(browser, "f-context", "emotion:sad")
    choose(browser, "f-belief", "incorrect")
    prompts = graded[(graded["dataset"] == "triviaqa") & (graded["context"] == "emotion:sad")
                     & (graded["belief"] == "incorrect")].drop_duplicates(KEY)
    wait_for(browser, lambda d: listed(d) == len(prompts))
    rows = browser.find_elements("css selector", "#prompt-list tbody tr")
    assert len(rows) == len(prompts) > 0
    assert all(r.find_elements("tag name", "td")[2].text == "emotion:sad" for r in rows)
    assert all(r.find_elements("tag name", "td")[3].text == "incorrect" for r in rows)


def test_browser_shows_every_persona_side_by_side_for_one_prompt(browser, lazy_explorer):
    graded, _, out = lazy_explorer
    open_page(browser, out, "dataset=triviaqa")
    browser.find_elements("css selector", "#prompt-list tbody tr")[0].click()
    wait_for(browser, lambda d: len(d.find_elements("css selector", ".card")) == graded["persona"].nunique())
    item = browser.find_elements("css selector", "#prompt-list tbody tr")[0].find_elements("tag name", "td")[1].text
    truth = graded[(graded["dataset"] == "triviaqa") & (graded["item_id"] == item) & (graded["context"] == "unmodified")
                   & (graded["belief"] == "none")].set_index("persona")
    for card in browser.find_elements("css selector", ".card"):
        persona = card.get_attribute("data-persona")
        row = truth.loc[persona]
        assert card.find_element("css selector", "pre.text").get_attribute("textContent") == row["response"]
        assert card.find_element("css selector", ".verdict").text == ("no verdict" if pd.isna(row["verdict"]) else row["verdict"])
        assert row["judge_reason"] in card.text
        assert f"{row['checkpoint']} · epoch {row['epoch']:.3g}" in card.text
    # the long (repeated) answer starts collapsed and opens on request
    original = browser.find_element("css selector", '.card[data-persona="original"]')
    toggle = original.find_element("css selector", ".toggle")
    assert "collapsed" in original.find_element("css selector", "pre.text").get_attribute("class")
    toggle.click()
    assert "collapsed" not in original.find_element("css selector", "pre.text").get_attribute("class")


def test_browser_jumps_from_a_paired_test_to_its_discordant_pairs(browser, lazy_explorer):
    graded, paired, out = lazy_explorer
    open_page(browser, out)
    browser.find_element("css selector", '.tab[data-tab="paired"]').click()
    for kind in ("b", "c"):
        rows = paired[paired[kind] > 0]
        if rows.empty:
            continue
        row = rows.iloc[0]
        browser.find_element("css selector", f'#paired-list tr[data-persona="{row.persona}"][data-dataset="{row.dataset}"]'
                             f'[data-test-type="{row.test_type}"][data-condition="{row.condition}"] button.pair-{kind}').click()
        wait_for(browser, lambda d, expected=row[kind]: d.find_element("id", "tab-prompts").is_displayed()
                 and listed(d) == expected)
        persona = row.persona
        badges = [[b.text for b in tr.find_elements("css selector", ".badge")]
                  for tr in browser.find_elements("css selector", "#prompt-list tbody tr")]
        header = [th.text for th in browser.find_elements("css selector", "#prompt-list thead th")]
        o, p = header.index("original") - 5, header.index(persona) - 5
        # right = C (or R on disinfo/advbench, where declining is right); wrong = I
        for codes in badges:
            right, wrong = (codes[o], codes[p]) if kind == "b" else (codes[p], codes[o])
            assert right in ("C", "R") and wrong == "I", codes
        assert len(browser.find_elements("css selector", ".card")) == graded["persona"].nunique()  # the first pair is open
        browser.find_element("css selector", '.tab[data-tab="paired"]').click()


def test_browser_search_finds_text_in_answers(browser, lazy_explorer):
    graded, _, out = lazy_explorer
    open_page(browser, out, "dataset=triviaqa")
    word = "planet"
    text = graded[graded["dataset"] == "triviaqa"]
    hits = text[text[["prompt", "question", "response", "judge_reason"]].apply(
        lambda r: any(word in str(v).lower() for v in r), axis=1)].drop_duplicates(KEY)
    search = browser.find_element("id", "f-search")
    search.send_keys(word)
    wait_for(browser, lambda d: listed(d) == len(hits) and "prompts match" in d.find_element("id", "status").text)
    shown = {tuple(td.text for td in tr.find_elements("tag name", "td")[1:4])
             for tr in browser.find_elements("css selector", "#prompt-list tbody tr")}
    assert shown == set(hits[["item_id", "context", "belief"]].itertuples(index=False, name=None)) and shown


def test_browser_opens_the_inlined_page_as_the_snakemake_report_does(browser, study, tmp_path):
    """Inside report.html the explorer is a data: URI in an iframe, with no data/ folder beside it."""
    graded, paired = study
    manifest = build_explorer(graded, paired, tmp_path)
    assert manifest["inline"]
    shutil.rmtree(tmp_path / "data")
    page = base64.b64encode((tmp_path / "index.html").read_bytes()).decode()
    browser.get(f"data:text/html;charset=utf-8;base64,{page}")
    wait_for(browser, lambda d: d.find_element("id", "prompt-list").get_attribute("data-count") is not None)
    browser.find_elements("css selector", "#prompt-list tbody tr")[0].click()
    wait_for(browser, lambda d: len(d.find_elements("css selector", ".card")) == graded["persona"].nunique())
    assert "error" not in browser.find_element("id", "status").get_attribute("class")


def test_screenshot_in_headless_chromium(study, tmp_path):
    require(find_chromium() is not None,
            "headless Chromium not found: install the Debian package chromium (`make test` does)")
    from PIL import Image

    graded, paired = study
    manifest = build_explorer(graded, paired, tmp_path)
    assert screenshot(tmp_path / "index.html", tmp_path / "shot.png", first_discordant(manifest, tmp_path)) is True
    image = Image.open(tmp_path / "shot.png").convert("L")
    assert image.size == SCREENSHOT_SIZE
    assert len(image.getcolors(256)) > 20  # text and badges, not a blank page
