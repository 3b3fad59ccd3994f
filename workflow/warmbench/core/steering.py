"""Activation steering for a transformers causal LM: mean residual-stream activations on response tokens, a direction
(mean of one set of conversations minus the mean of another, per layer), and a forward hook that adds a multiple of
it to one decoder layer's output.

The residual stream at layer l is the output of decoder layer l (`model.model.layers[l]`): the tensor the steering
hook adds to. It is read by a forward hook on that same module, not from `output_hidden_states`: transformers (5.x)
returns the last layer's entry there after the model's final norm (`tie_last_hidden_states`), which is not what a
hook on the last layer sees; for every other layer the two are the same tensor (tests/test_steering.py).

Response tokens are those the assistant's turns add to the rendered chat, counted the way stages/train.py counts a
reply (the conversation up to the reply rendered with its generation prompt, then with the reply): its text and its
end-of-turn marker, not the template's `<|im_start|>assistant` header, which is the prompt's. Every conversation
weighs the same in a mean (the mean of its response tokens, then the mean over conversations), so a long reply does
not outweigh a short one.

Loaded lazily: torch is imported inside the functions, so the Snakefile can import this module cheaply.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

Messages = list[dict]


def decoder_layers(model):
    """The decoder layers of a causal LM (`model.model.layers` for Llama, Qwen, Mistral...), through a PEFT wrapper."""
    if hasattr(model, "get_base_model"):  # peft.PeftModel: LoRA layers live inside the base model's modules
        model = model.get_base_model()
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None and hasattr(model, "get_decoder"):
        layers = getattr(model.get_decoder(), "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no decoder layers found (model.model.layers)")
    return layers


def _hidden(output):
    """A decoder layer's hidden states: its output, or the first element of a tuple output."""
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _chat_ids(tokenizer, messages: Messages, generation_prompt: bool = False) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                              return_dict=True)["input_ids"])


def response_mask(tokenizer, messages: Messages) -> tuple[list[int], list[bool]]:
    """The conversation's token ids (its chat template) and, per token, whether an assistant turn wrote it.

    Each assistant turn i owns the tokens between the rendering of messages[:i] with the generation prompt and that
    of messages[:i + 1]; the template must render each shorter conversation as a prefix of the longer (a template
    that rewrites earlier turns, e.g. one that strips reasoning from them, is refused rather than mis-masked)."""
    ids = _chat_ids(tokenizer, messages)
    mask = [False] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _chat_ids(tokenizer, messages[:i], generation_prompt=True)
        upto = _chat_ids(tokenizer, messages[: i + 1])
        if ids[: len(upto)] != upto or upto[: len(prompt)] != prompt:
            raise ValueError(f"the chat template does not render turn {i} of a conversation as a prefix of the "
                             "whole; its response tokens cannot be found")
        for position in range(len(prompt), len(upto)):
            mask[position] = True
    return ids, mask


@dataclass
class ResponseMeans:
    """Per conversation of one batch (in `indices` order): the mean over its response tokens of each layer's output
    [batch, layers, hidden], the mean of those tokens' activation norms [batch, layers], and how many tokens."""
    indices: list[int]
    means: "object"  # torch.Tensor, float32 on the CPU
    token_norms: "object"
    tokens: list[int]


def response_means(model, tokenizer, conversations: Sequence[Messages], *, batch_size: int = 8,
                   max_length: int | None = None) -> Iterator[ResponseMeans]:
    """Mean residual-stream activation of every decoder layer over each conversation's response tokens, batch by
    batch (length-sorted, right-padded, no gradients), in float32 on the CPU whatever the model's dtype and device.

    A conversation longer than `max_length` tokens is cut there (its later response tokens are not read); one left
    with no response token has token count 0 and a mean of zeros (the caller decides whether to drop it)."""
    import torch

    encoded = [response_mask(tokenizer, messages) for messages in conversations]
    if max_length:
        encoded = [(ids[:max_length], mask[:max_length]) for ids, mask in encoded]
    order = sorted(range(len(encoded)), key=lambda k: -len(encoded[k][0]))
    layers = decoder_layers(model)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    state: dict = {}

    def capture(index: int):
        def hook(module, args, output):
            hidden = _hidden(output).float()
            weights = state["weights"]  # [batch, seq, 1]: 1 on response tokens
            state["sums"][index] = (hidden * weights).sum(1).cpu()
            state["norms"][index] = (hidden.norm(dim=-1, keepdim=True) * weights).sum(1).squeeze(-1).cpu()
        return hook

    handles = [layer.register_forward_hook(capture(i)) for i, layer in enumerate(layers)]
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(encoded[k][0]) for k in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            weights = torch.zeros((len(idx), width), dtype=torch.float32)
            for row, k in enumerate(idx):
                ids, mask = encoded[k]
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
                weights[row, : len(ids)] = torch.tensor(mask, dtype=torch.float32)
            state.update(weights=weights[..., None].to(device), sums={}, norms={})
            with torch.inference_mode():
                # the decoder alone: the LM head's [batch, seq, vocab] logits are not needed
                decoder_of(model)(input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False)
            counts = weights.sum(1)  # [batch]
            divisor = counts.clamp(min=1)[:, None]
            means = torch.stack([state["sums"][i] / divisor for i in range(len(layers))], dim=1)
            norms = torch.stack([state["norms"][i] / divisor[:, 0] for i in range(len(layers))], dim=1)
            yield ResponseMeans(list(idx), means, norms, [int(c) for c in counts])
    finally:
        for handle in handles:
            handle.remove()


def decoder_of(model):
    """The module whose forward runs the decoder layers without the LM head (`model.model`), through PEFT."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    inner = getattr(model, "model", None)
    if inner is not None and getattr(inner, "layers", None) is not None:
        return inner
    return model.get_decoder()


def mean_difference(positive, negative):
    """The direction per layer: mean(positive) - mean(negative) over conversations ([n, layers, hidden] each, the
    rows need not pair up), and its norm per layer."""
    direction = positive.mean(0) - negative.mean(0)
    return direction, direction.norm(dim=-1)


def projections(means, direction):
    """Each conversation's mean activation projected on each layer's unit direction: [n, layers] (a layer whose
    direction is zero projects to 0)."""
    unit = direction / direction.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return (means * unit[None]).sum(-1)


class Steering:
    """A forward hook on one decoder layer adding `coefficients[row] * vector` to every position of each row's
    hidden states. `coefficients` is a number (every row) or one per row of the batch (0: that row unsteered, so a
    batch can mix steered and unsteered prompts); change it between forward passes with `set`. All coefficients 0
    return the layer's output untouched (bit-identical to no hook)."""

    def __init__(self, model, vector, layer: int, coefficients=1.0):
        import torch

        layers = decoder_layers(model)
        if not -len(layers) <= layer < len(layers):
            raise IndexError(f"layer {layer}: the model has {len(layers)} decoder layers")
        self.vector = torch.as_tensor(vector).detach()
        if self.vector.ndim != 1:
            raise ValueError(f"a steering vector is one layer's direction [hidden], not shape {tuple(self.vector.shape)}")
        self.layer = layer
        self.set(coefficients)
        self._cast = None
        self.handle = layers[layer].register_forward_hook(self._hook)

    def set(self, coefficients) -> None:
        import torch

        self.coefficients = torch.as_tensor(coefficients, dtype=torch.float32).detach()
        if self.coefficients.ndim > 1:
            raise ValueError("coefficients: a number or one per row of the batch")

    def _hook(self, module, args, output):
        import torch

        if not torch.any(self.coefficients != 0):
            return output
        hidden = _hidden(output)
        if self._cast is None or self._cast.dtype != hidden.dtype or self._cast.device != hidden.device:
            self._cast = self.vector.to(device=hidden.device, dtype=hidden.dtype)
        coefficients = self.coefficients.to(device=hidden.device, dtype=hidden.dtype)
        if coefficients.ndim == 1:
            if coefficients.shape[0] != hidden.shape[0]:
                raise ValueError(f"{coefficients.shape[0]} steering coefficients for a batch of {hidden.shape[0]} rows")
            coefficients = coefficients[:, None, None]
        return _with_hidden(output, hidden + coefficients * self._cast)

    def remove(self) -> None:
        self.handle.remove()


@contextmanager
def steering(model, vector, layer: int, coefficients=1.0) -> Iterator[Steering]:
    """`with steering(model, direction[layer], layer, coefficients) as steer:` adds the vector at that layer inside
    the block (steer.set(...) changes the coefficients between batches); the hook is removed on leaving it."""
    steer = Steering(model, vector, layer, coefficients)
    try:
        yield steer
    finally:
        steer.remove()
