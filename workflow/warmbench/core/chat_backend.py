"""The chat backend of a model that judges or rewrites: its own module, so that the stages using it (judge,
rewrite_fidelity) share this code and nothing else of each other's (an edit of the judge's parser reruns no
rewrite-fidelity job)."""
from __future__ import annotations


def chat_backend(cfg: dict, model_dir: list, local: dict | None = None, threads: int | None = None):
    """A judging or rewriting model's chat backend (`cfg["backend"]`): an OpenAI-compatible endpoint, or a
    `models:` key run in this job (`local`: its engine, dtype and vllm block) with transformers or, for engine vllm,
    vLLM in its own environment."""
    from .llm import TransformersChat, make_backend

    if cfg["backend"]["kind"] != "transformers":
        return make_backend(cfg["backend"])
    if local["engine"] == "vllm":
        from .vllm_backend import VLLMChat

        return VLLMChat(model_dir[0], dtype=local["dtype"], config_key=f"models.{cfg['backend']['model']}.vllm.python",
                        **local["vllm"])
    return TransformersChat(model_dir[0], dtype=local["dtype"], threads=threads)
