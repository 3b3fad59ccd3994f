"""How tests/data/graded_small.parquet was made (run once; about 3 CPU-minutes on a quiet 2-core machine):
real stages on warmbench's smoke sets, a small real graded table for the explorer's tests.

Two TriviaQA items and one disinfo item under all 18 conditions and two MMLU items, answered by SmolLM2-135M
(the embedded model) as itself and with the warm system prompt, judged by the reference judge.

    PYTHONPATH=workflow .venv/bin/python tests/data/make_graded_small.py

(The committed table was made by the per-cell generation of before; since each prompt is sampled from its own
seed, a rerun draws other samples, with the same rows and columns.)
"""
import tempfile
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "workflow"), str(REPO / "tests")]

from conftest import SMOLLM2  # noqa: E402
from warmbench.base_model import materialize  # noqa: E402
from warmbench.eval_prompts import expand_conditions, load_amendments, load_items, smoke_path  # noqa: E402
from warmbench.call_cache import CallCache  # noqa: E402
from warmbench.generate import Variant, generate_local  # noqa: E402
from warmbench.judge import judge_frame  # noqa: E402
from warmbench.llm import Sampling, TransformersChat  # noqa: E402


def main(model_dir: Path = REPO / "resources/models/smollm2") -> None:
    if not model_dir.is_dir():
        materialize(SMOLLM2, model_dir)
    amendments = load_amendments(REPO / "config/amendments.yaml")
    prompts = pd.DataFrame([row for dataset, n in (("triviaqa", 2), ("disinfo", 1), ("mmlu", 2))
                            for row in expand_conditions(load_items(dataset, smoke_path(dataset), n, seed=1), amendments, 1)])
    warm = (REPO / "config/prompts/system_warm.txt").read_text().strip()
    variants = [Variant("original", "original", "base", 0.0),
                Variant("warm_prompt", "warm_prompt", "base", 0.0, system_prompt=warm)]
    with tempfile.TemporaryDirectory() as cache:
        frames = generate_local(prompts, variants, model="smollm2",
                                model_cfg={"engine": "transformers", "dtype": "bfloat16", "source": SMOLLM2},
                                model_dir=str(model_dir), cache=CallCache(cache),
                                sampling=Sampling(temperature=0.8, top_p=1.0, max_new_tokens=24), batch_size=48,
                                seed=3, load_engine=lambda: TransformersChat(model_dir, dtype="bfloat16", threads=2))
    frames = [frames[v.output] for v in variants]
    judge_frame(pd.concat(frames, ignore_index=True)).to_parquet(REPO / "tests/data/graded_small.parquet", index=False)


if __name__ == "__main__":
    main()
