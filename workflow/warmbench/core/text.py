"""Answer text normalised for matching: shared by the reference judge and the wrong-answer check of eval_prompts,
apart from both so that editing one stage's code does not rerun the other (see stage.code_hash)."""
from __future__ import annotations

import re
import unicodedata


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = text.replace("\u2019", "'")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return " ".join(w for w in text.split() if w not in {"a", "an", "the"})
