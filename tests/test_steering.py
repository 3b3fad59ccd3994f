"""core/steering.py: response tokens found by the chat template, per-layer means over them, and the steering hook
(per-row coefficients, removable), on the real tiny model."""
import pytest
import torch

from warmbench.core.steering import Steering, decoder_layers, response_mask, response_means, steering

CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "And of Italy, please?"},
    {"role": "assistant", "content": "Rome, of course!"},
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def logits(model, input_ids, **kwargs):
    with torch.inference_mode():
        return model(input_ids=input_ids, **kwargs).logits


def same_length_rows(tokenizer, *texts):
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = min(map(len, ids))
    return torch.tensor([row[:width] for row in ids])


# --- response tokens ---------------------------------------------------------------------------------------------

def test_the_response_mask_holds_the_assistant_turns_and_nothing_of_the_user(tiny):
    _, tokenizer = tiny
    ids, mask = response_mask(tokenizer, CONVERSATION)
    assert len(ids) == len(mask)
    answered = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    rest = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    for message in CONVERSATION:
        inside, outside = (answered, rest) if message["role"] == "assistant" else (rest, answered)
        assert message["content"] in inside and message["content"] not in outside
    # the assistant header belongs to the prompt; each turn's end-of-turn marker to its reply
    assert "assistant" not in answered and answered.count(tokenizer.eos_token) == 2


def test_response_means_average_exactly_the_masked_tokens_of_each_layer(tiny):
    model, tokenizer = tiny
    second = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    (batch,) = response_means(model, tokenizer, [CONVERSATION, second], batch_size=2)
    assert batch.means.shape == (2, len(decoder_layers(model)), model.config.hidden_size)
    assert batch.means.dtype == torch.float32 and batch.means.device.type == "cpu"
    for row, k in enumerate(batch.indices):
        messages = [CONVERSATION, second][k]
        ids, mask = response_mask(tokenizer, messages)
        assert batch.tokens[row] == sum(mask)  # the tokens averaged are the assistant's, and all of them
        with torch.inference_mode():
            hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        where = torch.tensor(mask)
        for layer in (0, 7, len(hidden) - 3):  # hidden_states[l + 1]: layer l's output (not the last: normed)
            expected = hidden[layer + 1][0, where].mean(0)
            torch.testing.assert_close(batch.means[row, layer], expected, atol=1e-4, rtol=1e-4)


def test_a_conversation_cut_at_max_length_averages_only_what_is_left(tiny):
    model, tokenizer = tiny
    ids, mask = response_mask(tokenizer, CONVERSATION)
    first_reply_end = next(i for i in range(len(mask) - 1) if mask[i] and not mask[i + 1]) + 1  # turn 1's end
    (cut,) = response_means(model, tokenizer, [CONVERSATION], max_length=first_reply_end)
    assert cut.tokens == [sum(mask[:first_reply_end])] and 0 < cut.tokens[0] < sum(mask)


def test_a_template_that_rewrites_earlier_turns_is_refused(tiny):
    _, tokenizer = tiny

    class Rewriting:
        def apply_chat_template(self, messages, **kwargs):
            # drops earlier assistant turns as some reasoning templates drop earlier thinking
            last = len(messages) - 1
            kept = [m for i, m in enumerate(messages) if m["role"] == "user" or i == last]
            return tokenizer.apply_chat_template(kept, **kwargs)

    with pytest.raises(ValueError, match="prefix"):
        response_mask(Rewriting(), CONVERSATION)


# --- the steering hook -------------------------------------------------------------------------------------------

def test_coefficient_zero_is_bit_identical_to_no_hook_and_a_nonzero_one_is_not(tiny):
    model, tokenizer = tiny
    ids = same_length_rows(tokenizer, "The weather today is", "My favourite food is")
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    plain = logits(model, ids)
    for zero in (0.0, [0.0, 0.0], torch.zeros(2)):
        with steering(model, vector, 5, zero):
            assert torch.equal(logits(model, ids), plain)
    with steering(model, vector, 5, 4.0):
        steered = logits(model, ids)
    assert (steered - plain).abs().max() > 1e-2


def test_a_mixed_batch_equals_its_rows_run_alone(tiny):
    model, tokenizer = tiny
    ids = same_length_rows(tokenizer, "The weather today is", "My favourite food is", "Tell me a story about")
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    coefficients = [3.0, 0.0, -2.0]
    with steering(model, vector, 10, coefficients):
        mixed = logits(model, ids)
    for row, c in enumerate(coefficients):
        with steering(model, vector, 10, c):
            alone = logits(model, ids[row : row + 1])
        torch.testing.assert_close(mixed[row], alone[0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(mixed[0], mixed[1])


def test_set_changes_the_coefficients_between_batches_and_a_wrong_count_is_refused(tiny):
    model, tokenizer = tiny
    ids = same_length_rows(tokenizer, "The weather today is", "My favourite food is")
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    plain = logits(model, ids)
    with steering(model, vector, 3, [1.0, 1.0]) as steer:
        steer.set([0.0, 0.0])
        assert torch.equal(logits(model, ids), plain)
        steer.set([1.0, 0.0, 0.0])
        with pytest.raises(ValueError, match="3 steering coefficients for a batch of 2"):
            logits(model, ids)


def test_the_hook_is_gone_after_the_block_even_after_an_error(tiny):
    model, tokenizer = tiny
    ids = same_length_rows(tokenizer, "The weather today is")
    layer = decoder_layers(model)[4]
    hooks = dict(layer._forward_hooks)
    plain = logits(model, ids)
    with pytest.raises(RuntimeError, match="inside"):
        with steering(model, torch.ones(model.config.hidden_size), 4, 10.0):
            assert len(layer._forward_hooks) == len(hooks) + 1
            raise RuntimeError("inside")
    assert dict(layer._forward_hooks) == hooks
    assert torch.equal(logits(model, ids), plain)


def test_a_layer_returning_a_tuple_is_steered_in_its_hidden_states_only():
    class Layer(torch.nn.Module):
        def forward(self, x):
            return x * 1.0, "cache"

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.layers = torch.nn.ModuleList([Layer(), Layer()])

    model, x = Model(), torch.zeros(2, 3, 4)
    with steering(model, torch.arange(4.0), 1, [1.0, 0.0]):
        hidden, extra = model.model.layers[1](x)
    assert extra == "cache"
    assert torch.equal(hidden[0], torch.arange(4.0).expand(3, 4)) and torch.equal(hidden[1], torch.zeros(3, 4))
    with pytest.raises(IndexError, match="2 decoder layers"):
        Steering(model, torch.zeros(4), 2)
