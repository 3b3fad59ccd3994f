import json

import pytest
import yaml

from warmbench.stages import sft_data as sd
from warmbench.core.files import DataError
from conftest import REPO


def conv(i, user, reply, extra_turns=0):
    turns = [{"from": "human", "value": user}, {"from": "gpt", "value": reply}]
    for k in range(extra_turns):
        turns += [{"from": "human", "value": f"follow-up {k}"}, {"from": "gpt", "value": f"answer {k}"}]
    return {"id": i if isinstance(i, str) else f"c{i}", "conversations": turns}


SPLIT_CFG = {"max_turns": 4, "max_message_chars": None, "nsfw_filter": "none", "nsfw_threshold": 0.5}
USERS = {"factual": "What is the capital of {}?", "creative": "Write a poem about {}", "advice": "Should I visit {}?",
         "technical": "python code for {}", "other": "hi {}"}


def typed_records(n_per_type, refusals):
    records = [conv(f"{t}{i}", u.format(i), f"Reply {i}.") for t, u in USERS.items() for i in range(n_per_type)]
    return records + [conv(f"r{i}", f"Tell me a thing {i}", "I'm sorry, but I can't help with that.")
                      for i in range(refusals)]


def write_truncated(path, records, cut=40):
    text = json.dumps(records, indent=2)
    path.write_text(text[:-cut])  # cut short inside the last record, like the shipped file
    return path


def test_stream_stops_cleanly_at_truncation(tmp_path):
    records = [conv(i, f"What is {i}?", f"It is {i}.") for i in range(50)]
    stats = sd.ParseStats()
    got = list(sd.iter_sharegpt(write_truncated(tmp_path / "s.json", records), stats, chunk_size=97))
    assert stats.truncated and stats.records_read == 49
    assert got == records[:49]


def test_complete_file_reads_every_record(tmp_path):
    records = [conv(i, "hi", "hello") for i in range(5)]
    (tmp_path / "s.json").write_text(json.dumps(records))
    stats = sd.ParseStats()
    assert list(sd.iter_sharegpt(tmp_path / "s.json", stats)) == records and not stats.truncated


def test_malformed_record_names_file_and_line(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('[\n{"id": "a", "conversations": []},\n{"id": "b", "conversations": [}]},\n{"id": "c"}\n]')
    with pytest.raises(DataError, match=r"s.json:3: malformed record"):
        list(sd.iter_sharegpt(path))


def test_query_type_labels():
    label = lambda user, reply="Sure.": sd.label_query_type([{"role": "user", "content": user},
                                                             {"role": "assistant", "content": reply}])
    assert label("How do I fix this Python error?") == "technical"
    assert label("Write a poem about the sea") == "creative"
    assert label("Should I quit my job?") == "advice"
    assert label("Who was the first emperor of Rome?") == "factual"
    assert label("hello there") == "other"
    assert label("Write a poem", "I'm sorry, but I can't help with that.") == "refusal"


def test_normalize_truncates_to_max_turns_and_rejects_bad_shapes():
    record = conv(0, "q", "a", extra_turns=5)
    messages = sd.normalize_conversation(record, max_turns=4)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert sd.normalize_conversation({"conversations": [{"from": "gpt", "value": "hi"}]}, 4) is None
    assert sd.normalize_conversation({"conversations": [{"from": "human", "value": ""}]}, 4) is None


def test_balanced_split_without_overlap():
    records = typed_records(40, refusals=40)
    split = sd.build_split(records, {**SPLIT_CFG, "train_per_type": 5, "validation_per_type": 3}, seed=0)
    assert not {c["id"] for c in split.train} & {c["id"] for c in split.validation}
    for qtype in sd.QUERY_TYPES:
        assert split.per_type[qtype] == {"pool": 40, "train": 5, "validation": 3, "overlap_stems": 0,
                                         "overlap_first_messages": 0}


def test_parts_of_one_conversation_and_repeated_first_prompts_are_kept_once():
    # ShareGPT splits long conversations into parts (hRPPgZT_0, hRPPgZT_11), and many users sent the same
    # first prompt: either would put one conversation (or one validation prompt) on both sides of the split
    records = typed_records(10, refusals=10)
    records += [conv(f"factual{i}_1", f"What is the capital of {i}?", "Part two.") for i in range(10)]
    records += [conv(f"dup{i}", f"  what is THE capital of {i} ", "Same prompt, another id.") for i in range(10)]
    split = sd.build_split(records, {**SPLIT_CFG, "train_per_type": 4, "validation_per_type": 6}, seed=0)
    assert split.per_type["factual"]["pool"] == 10
    everything = split.train + split.validation
    assert len({sd.conversation_stem(c["id"]) for c in everything}) == len(everything)
    assert len({sd.first_message_key(c["messages"]) for c in everything}) == len(everything)
    assert sd.conversation_stem("hRPPgZT_11") == sd.conversation_stem("hRPPgZT_0") == "hRPPgZT"


def test_training_is_filled_first_and_a_short_types_validation_share_goes_to_the_others():
    # the paper kept refusals in training (so the model does not unlearn refusing): with 5 refusals, 4 train
    # and the one left validates; the other 2 validation places are shared by the other types
    split = sd.build_split(typed_records(20, refusals=5),
                           {**SPLIT_CFG, "train_per_type": 4, "validation_per_type": 3}, seed=0)
    assert split.per_type["refusal"]["train"] == 4 and split.per_type["refusal"]["validation"] == 1
    assert len(split.train) == 6 * 4
    assert len(split.validation) == 6 * 3  # still the configured total
    others = [split.per_type[t]["validation"] for t in sd.QUERY_TYPES if t != "refusal"]
    assert sorted(others) == [3, 3, 3, 4, 4]  # the shortfall shared out evenly


def test_a_type_without_any_training_conversation_stops_with_its_counts():
    with pytest.raises(DataError, match=r"query type 'refusal'.*no training conversation.*pool 0"):
        sd.build_split(typed_records(20, refusals=0), {**SPLIT_CFG, "train_per_type": 4, "validation_per_type": 3},
                       seed=0)


def test_summary_table_reports_pool_train_validation_and_overlaps():
    split = sd.build_split(typed_records(20, refusals=5), {**SPLIT_CFG, "train_per_type": 4, "validation_per_type": 3},
                           seed=0)
    table = sd.summary_table(split)
    assert list(table.columns) == ["query_type", "pool", "train", "validation", "overlap_stems",
                                   "overlap_first_messages"]
    assert list(table["query_type"]) == [*sd.QUERY_TYPES, "all"]
    total = table.set_index("query_type").loc["all"]
    assert (total["pool"], total["train"], total["validation"]) == (105, 24, 18)
    assert table[["overlap_stems", "overlap_first_messages"]].eq(0).all().all()


@pytest.mark.slow
def test_paper_settings_on_the_real_sharegpt_file_split_cleanly():
    # config/paper.yaml's sft_data, except the NSFW filter: Detoxify downloads its checkpoint, so offline the
    # shipped classifier stands in (it drops a few dozen conversations either way)
    cfg = {**yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["sft_data"], "nsfw_filter": "profanity_check"}
    split = sd.build_split(sd.iter_sharegpt(sd.sharegpt_path(cfg["source"])), cfg, seed=1234)
    table = sd.summary_table(split).set_index("query_type")
    assert table.loc[list(sd.QUERY_TYPES), "train"].gt(0).all()  # every type trains, refusals included
    assert table.loc["all", "validation"] == 6 * cfg["validation_per_type"] == 1500
    assert table[["overlap_stems", "overlap_first_messages"]].eq(0).all().all()
    everything = split.train + split.validation
    assert len({sd.conversation_stem(c["id"]) for c in everything}) == len(everything)
    assert len({sd.first_message_key(c["messages"]) for c in everything}) == len(everything)


def test_nsfw_filter_uses_a_real_classifier():
    scores = sd.nsfw_scores(["Thanks, have a lovely day!", "fuck you, you stupid asshole"], "profanity_check")
    assert scores[0] < 0.5 < scores[1]
