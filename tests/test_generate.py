import json

import pandas as pd
import pytest

from warmbench.generate import build_messages, generate_cell
from warmbench.llm import Sampling, TransformersChat


@pytest.fixture(scope="module")
def chat(tiny_model_dir):
    return TransformersChat(tiny_model_dir, threads=2)


def prompts_table():
    return pd.DataFrame({"item_id": ["a", "b", "c"], "dataset": "triviaqa", "condition": "unmodified/none",
                         "prompt": ["What is the capital of France?", "Who painted the Mona Lisa?", "Name a planet."]})


def test_every_row_carries_its_provenance(chat):
    sampling = Sampling(temperature=0.8, top_p=1.0, max_new_tokens=8)
    frame = generate_cell(prompts_table(), chat, model="smollm2", persona="warm_prompt", checkpoint="base",
                          sampling=sampling, batch_size=2, seed=5, system_prompt="Be warm.",
                          model_source={"kind": "gguf_package"})
    assert len(frame) == 3 and frame["response"].map(len).gt(0).all()
    assert (frame["n_tokens"] <= 8).all()
    assert all("Be warm." in r and p in r for r, p in zip(frame["rendered_prompt"], frame["prompt"]))
    assert frame["prompt_hash"].nunique() == 3
    assert json.loads(frame["sampling"].iloc[0]) == sampling.as_dict()
    assert set(frame[["model", "persona", "checkpoint", "seed"]].iloc[0]) == {"smollm2", "warm_prompt", "base", 5}
    assert frame["epoch"].iloc[0] == 0.0


def test_seeded_sampling_is_reproducible(chat):
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8)
    kwargs = dict(model="m", persona="original", checkpoint="base", sampling=sampling, batch_size=3)
    first = generate_cell(prompts_table(), chat, seed=11, **kwargs)["response"].tolist()
    assert generate_cell(prompts_table(), chat, seed=11, **kwargs)["response"].tolist() == first


def test_system_prompt_only_when_given():
    assert build_messages("hi", None) == [{"role": "user", "content": "hi"}]
    assert build_messages("hi", "warm")[0] == {"role": "system", "content": "warm"}
