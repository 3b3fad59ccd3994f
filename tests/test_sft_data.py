import json

import pytest

from warmbench import sft_data as sd
from warmbench.io import DataError


def conv(i, user, reply, extra_turns=0):
    turns = [{"from": "human", "value": user}, {"from": "gpt", "value": reply}]
    for k in range(extra_turns):
        turns += [{"from": "human", "value": f"follow-up {k}"}, {"from": "gpt", "value": f"answer {k}"}]
    return {"id": f"c{i}", "conversations": turns}


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
    users = ["What is the capital of {}?", "Write a poem about {}", "Should I visit {}?", "python code for {}", "hi {}"]
    records = [conv(i, users[i % 5].format(i), f"Reply {i}.") for i in range(200)]
    records.append(conv(0, "What is the capital of 0?", "duplicate id"))
    split = sd.build_split(records, {"max_turns": 4, "max_message_chars": None, "nsfw_filter": "profanity_check",
                                     "nsfw_threshold": 0.5, "train_per_type": 5, "validation_per_type": 3}, seed=0)
    assert not {c["id"] for c in split.train} & {c["id"] for c in split.validation}
    for qtype in ("factual", "creative", "advice", "technical", "other"):
        assert split.per_type[qtype] == {"available": 40, "train": 5, "validation": 3}
    assert split.per_type["refusal"]["available"] == 0


def test_nsfw_filter_uses_a_real_classifier():
    scores = sd.nsfw_scores(["Thanks, have a lovely day!", "fuck you, you stupid asshole"], "profanity_check")
    assert scores[0] < 0.5 < scores[1]
