"""Chat backends behind one interface, and the content-hash cache that makes reruns free.

- TransformersChat: local model, batched (length-sorted, left-padded), PEFT adapters on a base loaded once.
- OpenAIChat: any OpenAI-compatible endpoint through the `openai` SDK; bounded concurrency; the SDK retries
  429/5xx/timeouts with exponential backoff.
- CallCache (call_cache.py): completed calls keyed by a hash of everything that changes the answer, in
  per-process append-only shards that are safe on NFS; every completed call is fsync'ed at once, so a crash or
  `kill -9` mid-run repeats no completed call. An empty or failed reply is never cached.
- A local model's cache identity (model_identity) covers what changes its answers: source block and revision,
  dtype, a hash of its config, tokenizer and weights index, and the content hash of its LoRA adapter.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .local_models import SOURCE_RECORD
from .call_cache import CallCache  # noqa: F401 - the cache's public home is here, beside cached_chat
from .validation import schema_defaults
from .files import sha256_file, stable_hash

log = logging.getLogger(__name__)

Messages = list[dict]
OnResult = Callable[..., None]  # on_result(index, text, reply_meta=None)


SAMPLING_DEFAULTS = schema_defaults("sampling")  # the schema holds every default; code only reads them
ENDPOINT_DEFAULTS = schema_defaults("openai_endpoint")


@dataclass(frozen=True)
class Sampling:
    temperature: float = SAMPLING_DEFAULTS["temperature"]
    top_p: float = SAMPLING_DEFAULTS["top_p"]
    max_new_tokens: int = SAMPLING_DEFAULTS["max_new_tokens"]

    @classmethod
    def from_config(cls, cfg: dict | None) -> "Sampling":
        return cls(**(cfg or {}))

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}


@dataclass
class ChatResult:
    texts: list[str]  # "" where the reply was empty or null (never cached)
    replies: list[dict]  # per answer: what the endpoint said about itself (snapshot, fingerprint, token usage)
    calls: int  # backend calls made (0 on a rerun)
    empty: int = 0  # calls made that came back empty or null


def cached_chat(backend, cache: CallCache, conversations: Sequence[Messages], sampling: Sampling,
                response_format: dict | None = None, **backend_options) -> ChatResult:
    """Answer every conversation, calling the backend only for those not in the cache.

    Identical requests are sent once; each completed call is stored the moment it completes. An empty or null
    reply is returned as "" and not stored, so the next run asks again. A `response_format` (structured outputs,
    OpenAI-compatible backends) is sent with every request and is part of its cache key.
    """
    if response_format is not None:
        backend_options["response_format"] = response_format
    keys = [cache.key(backend.identity, conv, sampling, response_format) for conv in conversations]
    found = cache.get_many(keys)
    todo = list(dict.fromkeys(k for k in keys if k not in found))
    first_index = {k: keys.index(k) for k in todo}
    log.info("%d requests: %d cached, %d to call", len(keys), len(keys) - sum(k in todo for k in keys), len(todo))
    empty, stored, shared = 0, {}, set()  # stored: put under the key's lock; shared: answered by another asker

    def meta_of(reply: dict | None) -> dict:
        return {"backend": backend.identity, "sampling": sampling.as_dict(), "reply": reply or {},
                **({"response_format": response_format} if response_format is not None else {})}

    def store(position: int, text: str | None, reply: dict | None = None) -> None:
        nonlocal empty
        if position in shared:
            return
        kept = stored.pop(position) if position in stored else cache.put(todo[position], text, meta_of(reply))
        empty += not kept
        found[todo[position]] = ((text or "").strip(), meta_of(reply))

    def ask_once(position: int, ask) -> tuple[str, dict]:
        """One paid call under its key's lock: a job asking the same question at the same moment waits for this
        answer instead of paying for it again (and this one for its)."""
        with cache.asking(todo[position]) as hit:
            if hit is not None:
                shared.add(position)
                found[todo[position]] = hit
                return hit[0], hit[1].get("reply", {})
            text, reply = ask()
            stored[position] = cache.put(todo[position], text, meta_of(reply))  # before the lock goes
            return text, reply

    if todo:
        if getattr(backend, "asks_one_by_one", False):
            cache.watch(todo)
            backend_options["guard"] = ask_once
        backend.chat([conversations[first_index[k]] for k in todo], sampling, on_result=store, **backend_options)
    if empty:
        log.warning("%d of %d calls came back empty or null: not cached, asked again on the next run", empty, len(todo))
    return ChatResult([found[k][0] for k in keys], [found[k][1].get("reply", {}) for k in keys],
                      len(todo) - len(shared), empty)


class TooManyFailures(RuntimeError):
    """More of a stage's LLM replies failed than its configured share allows."""


def check_failure_share(failed: int, total: int, max_share: float, what: str, key: str, hint: str = "") -> None:
    """Fail a stage, naming the count, when more than `max_share` of its `total` replies failed."""
    if total and failed / total > max_share:
        raise TooManyFailures(f"{failed} of {total} {what} ({failed / total:.1%}), more than {key} = {max_share:g} "
                              f"allows{': ' + hint if hint else ''}")
    if failed:
        log.warning("%d of %d %s (%.1f%%, within %s = %g)", failed, total, what, 100 * failed / total, key, max_share)


# What identifies a local model's answers besides its weights: a hash of these files (those present).
IDENTITY_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "tokenizer.model",
                  "model.safetensors.index.json", "pytorch_model.bin.index.json")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def _safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, offsets): its index, without reading
    the weights."""
    with open(path, "rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        return handle.read(min(size, 100 << 20))


def model_files_hash(model_dir: str | os.PathLike) -> str:
    """sha256 over the config, tokenizer and chat template files and the weights' index (safetensors headers and
    file sizes; an index.json for sharded weights). The weights' values are identified by the source record."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for name in IDENTITY_FILES:
        if (model_dir / name).is_file():
            digest.update(f"{name}:{sha256_file(model_dir / name)}\n".encode())
    for weights in sorted([*model_dir.glob("*.safetensors"), *model_dir.glob("*.bin")]):
        digest.update(f"{weights.name}:{weights.stat().st_size}\n".encode())
        if weights.suffix == ".safetensors":
            digest.update(hashlib.sha256(_safetensors_header(weights)).hexdigest().encode())
    return digest.hexdigest()


# Lists of an adapter's config whose order means nothing: PEFT keeps target_modules as a set and writes it in an
# order that changes from run to run.
UNORDERED_ADAPTER_KEYS = ("target_modules", "modules_to_save", "exclude_modules", "layers_to_transform")


def canonical_adapter_config(path: Path) -> bytes:
    """An adapter config as PEFT writes it (indent 2, sorted keys), its order-free lists sorted: the same content
    always gives the same bytes, and a config written that way already gives its own bytes (identities kept)."""
    config = json.loads(path.read_text())
    for key in UNORDERED_ADAPTER_KEYS:
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key], key=str)
    return json.dumps(config, indent=2, sort_keys=True).encode()


def adapter_hash(adapter_dir: str | os.PathLike) -> str:
    """sha256 of a LoRA adapter's content: its config (in canonical form, so a byte-identical retraining is the same
    adapter) and weights."""
    adapter_dir = Path(adapter_dir)
    found = [name for name in ADAPTER_FILES if (adapter_dir / name).is_file()]
    if not found:
        raise FileNotFoundError(f"{adapter_dir}: no LoRA adapter ({' or '.join(ADAPTER_FILES)})")

    def content_hash(name: str) -> str:
        if name == "adapter_config.json":
            return hashlib.sha256(canonical_adapter_config(adapter_dir / name)).hexdigest()
        return sha256_file(adapter_dir / name)

    return hashlib.sha256("".join(f"{n}:{content_hash(n)}\n" for n in found).encode()).hexdigest()


def model_identity(kind: str, model_dir: str | os.PathLike, dtype: str = "auto",
                   adapter: str | os.PathLike | None = None) -> dict:
    """What a local model's answers depend on, for cache keys and provenance: the source block and revision that
    base_model recorded (for a `path` source, also the weight files' sizes and mtimes, as they can change in
    place), the dtype it loads in here, a hash of config, tokenizer and weights index, and the adapter's content
    hash."""
    model_dir = Path(model_dir)
    record = model_dir / SOURCE_RECORD
    source = json.loads(record.read_text()) if record.is_file() else None
    from .local_models import resolve_dtype

    identity = {"kind": kind, "model": str(model_dir), "dtype": resolve_dtype(dtype), "source": source,
                "files_sha256": model_files_hash(model_dir), "adapter": str(adapter) if adapter else None,
                "adapter_sha256": adapter_hash(adapter) if adapter else None}
    if (source or {}).get("source", {}).get("kind") == "path":
        identity["weights_stat"] = [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                    for p in sorted([*model_dir.glob("*.safetensors"), *model_dir.glob("*.bin")])]
    return identity


def prompt_seed(seed: int, rendered: str) -> int:
    """A prompt's own sampling seed, from the job's seed and the prompt's text: its sample depends neither on its
    position nor on the prompts it is batched with (as far as the backend's arithmetic allows), so a rerun that
    generates only some rows draws them as a full run would."""
    return int(stable_hash([seed, rendered])[:15], 16)  # 60 bits: any backend's seed type takes it


def load_chat_tokenizer(model_dir: str | os.PathLike):
    """The model's tokenizer, set up for batched generation (left padding, a pad token)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"  # decoder-only generation needs left padding
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def render_chat(tokenizer, messages: Messages) -> str:
    """The prompt text exactly as the model receives it: its own chat template, ready for the reply."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def per_prompt_sampler(seeds: Sequence[int], sampling: Sampling, device):
    """A transformers logits processor that samples each row of a batch with its own generator (seeded per prompt)
    from the temperature- and top-p-scaled distribution, and leaves only that token for greedy decoding to pick.
    (transformers' own sampling draws every row from one global generator, so a row's sample would depend on the
    rows beside it.) No top-k: sampling is temperature and top-p only, as vLLM and the OpenAI API do it."""
    import torch
    from transformers import LogitsProcessor, TemperatureLogitsWarper, TopPLogitsWarper

    warpers = [TemperatureLogitsWarper(sampling.temperature)]
    if sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    class PerPromptSampler(LogitsProcessor):
        def __call__(self, input_ids, scores):
            for warper in warpers:
                scores = warper(input_ids, scores)
            probs = torch.softmax(scores.float(), dim=-1)
            # one draw per row per step from that row's own generator, whatever else is in the batch
            tokens = torch.cat([torch.multinomial(probs[row], 1, generator=g) for row, g in enumerate(generators)])
            chosen = torch.full_like(scores, float("-inf"))
            return chosen.scatter_(1, tokens[:, None], 0.0)

    return PerPromptSampler()


class TransformersChat:
    """A local causal LM: base weights loaded once, LoRA adapters loaded beside them (PEFT), several in one batch."""

    BASE = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch

    def __init__(self, model_dir: str | os.PathLike, dtype: str = "auto", threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM

        from .local_models import compute_device, torch_dtype

        if threads:
            torch.set_num_threads(threads)
        self.device = compute_device()
        self.model_dir = str(model_dir)
        self.tokenizer = load_chat_tokenizer(self.model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch_dtype(dtype)).to(self.device).eval()
        self.adapter: str | None = None
        self.dtype = dtype
        self.identity = model_identity("transformers", self.model_dir, dtype)

    def use_adapter(self, name: str, path: str | os.PathLike) -> None:
        """Load a LoRA adapter (once) and make it the current one; adapters live beside each other on one copy of
        the base weights."""
        from peft import PeftModel

        if self.adapter is None and not hasattr(self.model, "peft_config"):
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name).eval()
        elif name not in self.model.peft_config:
            self.model.load_adapter(str(path), adapter_name=name)
        self.model.set_adapter(name)
        self.adapter = name
        self.identity = model_identity("transformers", self.model_dir, self.dtype, adapter=path)

    def render(self, messages: Messages) -> str:
        return render_chat(self.tokenizer, messages)

    def generate_rendered(
        self,
        prompts: Sequence[str],
        sampling: Sampling,
        batch_size: int = 32,
        seed: int = 0,
        on_result: OnResult | None = None,
        progress: bool = True,
        adapters: Sequence[str | None] | None = None,
    ) -> list[tuple[str, int]]:
        """Generate for already-rendered prompts; returns (text, generated token count) in input order.

        `adapters` names each prompt's adapter (loaded with use_adapter; None: the base model); without it every
        prompt uses the current adapter. Prompts are sorted by length so each batch pads little, and prompts of
        different adapters share batches (PEFT's mixed-adapter batches). Each prompt is sampled from its own
        generator, seeded by prompt_seed(seed, prompt).
        """
        import torch
        from tqdm import tqdm
        from transformers import LogitsProcessorList

        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        if adapters is not None and any(adapters) and not hasattr(self.model, "peft_config"):
            raise ValueError(f"adapters {sorted(set(filter(None, adapters)))} were never loaded (use_adapter)")
        mixed = adapters is not None and hasattr(self.model, "peft_config")
        results: list[tuple[str, int] | None] = [None] * len(prompts)
        bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress, mininterval=5)
        eos = self.tokenizer.eos_token_id
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.device)
            kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                          do_sample=False, temperature=None, top_p=None, top_k=None)
            if sampling.temperature > 0:  # greedy decoding picks the token each row's own generator drew
                kwargs["logits_processor"] = LogitsProcessorList([per_prompt_sampler(
                    [prompt_seed(seed, prompts[i]) for i in idx], sampling, self.device)])
            if mixed:
                kwargs["adapter_names"] = [adapters[i] or self.BASE for i in idx]
            with torch.inference_mode():
                out = self.model.generate(**enc, **kwargs)
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            for row, i in enumerate(idx):
                ids = new_tokens[row].tolist()
                if eos in ids:
                    ids = ids[: ids.index(eos)]
                text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                results[i] = (text, len(ids))
                if on_result:
                    on_result(i, text, {"prompt_tokens": lengths[i], "completion_tokens": len(ids)})
            bar.update(len(idx))
        bar.close()
        return results  # type: ignore[return-value]

    def chat(self, conversations: Sequence[Messages], sampling: Sampling, on_result: OnResult | None = None,
             batch_size: int = 32, seed: int = 0) -> list[str]:
        rendered = [self.render(conv) for conv in conversations]
        return [text for text, _ in self.generate_rendered(rendered, sampling, batch_size, seed, on_result)]


class OpenAIChat:
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server)."""

    asks_one_by_one = True  # each call is a request of its own: cached_chat guards it with its key's lock

    def __init__(self, model: str, base_url: str | None = ENDPOINT_DEFAULTS["base_url"],
                 api_key_env: str = ENDPOINT_DEFAULTS["api_key_env"],
                 max_concurrency: int = ENDPOINT_DEFAULTS["max_concurrency"],
                 max_retries: int = ENDPOINT_DEFAULTS["max_retries"], timeout_s: float = ENDPOINT_DEFAULTS["timeout_s"]):
        from openai import OpenAI

        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise RuntimeError(f"environment variable {api_key_env} is not set")
        # The key stays in the client; identity (cached, logged) holds only the model and endpoint.
        self.client = OpenAI(api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout_s)
        self.model = model
        self.max_concurrency = max_concurrency
        self.identity = {"kind": "openai", "model": model, "base_url": base_url}

    def request_body(self, messages: Messages, sampling: Sampling, response_format: dict | None = None) -> dict:
        """The chat-completion request for one conversation (also a line of an OpenAI Batch file)."""
        body = {"model": self.model, "messages": messages, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens}
        if response_format is not None:
            body["response_format"] = response_format
        return body

    @staticmethod
    def answer(reply: dict) -> tuple[str, dict]:
        """Text and provenance of a chat-completion reply: the dated snapshot that answered and its fingerprint."""
        usage = reply.get("usage") or {}
        choice = (reply.get("choices") or [{}])[0]
        return ((choice.get("message") or {}).get("content") or "").strip(), {
            "model": reply.get("model"), "system_fingerprint": reply.get("system_fingerprint"),
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens")}

    def _one(self, messages: Messages, sampling: Sampling, response_format: dict | None = None) -> tuple[str, dict]:
        reply = self.client.chat.completions.create(**self.request_body(messages, sampling, response_format))
        return self.answer(reply.model_dump())

    def chat(self, conversations: Sequence[Messages], sampling: Sampling, on_result: OnResult | None = None,
             response_format: dict | None = None, guard=None, **_: object) -> list[str]:
        """`guard(i, ask)`, if given, makes call i by calling ask() (or answers it otherwise)."""
        from tqdm import tqdm

        def call(i: int, conv: Messages) -> tuple[str, dict]:
            ask = lambda: self._one(conv, sampling, response_format)  # noqa: E731
            return guard(i, ask) if guard else ask()

        results: list[str | None] = [None] * len(conversations)
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency)
        try:
            futures = {pool.submit(call, i, conv): i for i, conv in enumerate(conversations)}
            for future in tqdm(as_completed(futures), total=len(futures), desc="api", unit="call", mininterval=5):
                i = futures[future]
                text, reply = future.result()
                results[i] = text
                if on_result:
                    on_result(i, text, reply)
        finally:
            # on an error or a stop signal, calls not yet sent are dropped (they would be paid for and lost);
            # only those in flight finish
            pool.shutdown(wait=False, cancel_futures=True)
        return results  # type: ignore[return-value]


def make_backend(cfg: dict, model_dir: str | os.PathLike | None = None, threads: int | None = None,
                 dtype: str = "auto"):
    """Build the backend a config `backend:` block names; a local model is read from `model_dir`."""
    if cfg["kind"] == "transformers":
        return TransformersChat(model_dir, dtype=dtype, threads=threads)
    if cfg["kind"] == "openai":
        options = {k: cfg[k] for k in ("base_url", "api_key_env", "max_concurrency", "max_retries", "timeout_s") if k in cfg}
        return OpenAIChat(cfg["model"], **options)
    raise ValueError(f"unknown backend kind {cfg['kind']!r}")


class APIGenerator:
    """Generation through an OpenAI-compatible endpoint with the interface of TransformersChat.

    The endpoint applies the chat template, so the "rendered" prompt stored per row is the exact JSON message
    list sent. Every response is cached by content hash (endpoint, model, messages, sampling): a rerun, or a
    run resumed after a crash, calls the endpoint only for what is missing.
    """

    def __init__(self, backend: OpenAIChat, cache: CallCache):
        self.backend, self.cache = backend, cache
        self.base_model = backend.model
        self.identity = {**backend.identity, "adapter": None}
        self.last_replies: list[dict] = []
        self.last_calls = 0

    def use_model(self, model: str | None) -> None:
        """Answer with another model of the same endpoint (a fine-tuned one; None: the base model again); it is
        part of every cache key."""
        self.backend.model = model or self.base_model
        self.backend.identity = {**self.backend.identity, "model": self.backend.model}
        self.identity = {**self.backend.identity, "adapter": model}

    def render(self, messages: Messages) -> str:
        return json.dumps(messages, ensure_ascii=False)

    def generate_rendered(self, prompts: Sequence[str], sampling: Sampling, **_: object) -> list[tuple[str, int]]:
        result = cached_chat(self.backend, self.cache, [json.loads(p) for p in prompts], sampling)
        self.last_replies, self.last_calls = result.replies, result.calls
        return [(text, reply.get("completion_tokens") or 0) for text, reply in zip(result.texts, result.replies)]
