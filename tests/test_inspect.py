import math
import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distill.evaluate.heads import LOCAL_WINDOW, MIN_QUERY, classify, head_statistics, stats_from_totals, summarise_attention
from distill.evaluate.neurons import RunningTopK, neuron_activations, top_neurons
from tiny_lm import STORIES, tiny_llama, tiny_tokenizer

LONG_TEXTS = [" ".join(STORIES[i:] + STORIES[:i]) for i in range(3)]  # ~100 tokens each


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def one_head_llama(vocab_size: int) -> LlamaForCausalLM:
    """One layer, one head of size 4, every token embedded alike: attention can only depend on position."""
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=4, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=256,
                         rope_parameters={"rope_type": "default", "rope_theta": 100.0}, attn_implementation="eager")
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight[:] = 1.0
    return model


def set_query_key(model, q: torch.Tensor, k: torch.Tensor) -> None:
    attention = model.model.layers[0].self_attn
    with torch.no_grad():
        attention.q_proj.weight.zero_()
        attention.q_proj.weight[:, 0] = q  # the normed hidden state is all ones: q = column 0
        attention.k_proj.weight.zero_()
        attention.k_proj.weight[:, 0] = k


def test_previous_token_head_is_local(tok):
    # RoPE rotates q at position i and k at position j; a query pre-rotated back by one step matches the
    # key one position earlier. Two frequencies (1 and 0.1 rad/token) make that match unique up to ~60
    # tokens (both repeat together after 2*pi*10 positions), so the texts are cut at 60.
    model = one_head_llama(len(tok))
    s = 11.0
    w0, w1 = model.model.rotary_emb.inv_freq.tolist()
    k = torch.tensor([s, s, 0.0, 0.0])
    q = torch.tensor([s * math.cos(w0), s * math.cos(w1), -s * math.sin(w0), -s * math.sin(w1)])
    set_query_key(model, q, k)

    [head] = head_statistics(model, tok, LONG_TEXTS, context_length=60)

    assert head.kind == "local"
    assert head.mean_distance == pytest.approx(1.0, abs=0.05)
    assert head.local_mass > 0.95 and head.entropy < 0.05


def test_uniform_head_is_diffuse(tok):
    model = one_head_llama(len(tok))
    set_query_key(model, torch.zeros(4), torch.zeros(4))  # all scores 0: uniform over earlier tokens

    [head] = head_statistics(model, tok, LONG_TEXTS, context_length=128)

    assert head.kind == "diffuse"
    assert head.entropy == pytest.approx(1.0, abs=1e-4)
    assert head.local_mass < 0.3


def synthetic_maps(T: int, pattern: str) -> torch.Tensor:
    """(1, 1, T, T) attention with a known structure."""
    a = torch.zeros(T, T)
    for i in range(T):
        if pattern == "previous":
            a[i, max(i - 1, 0)] = 1.0
        elif pattern == "first":
            a[i, 0] = 1.0
        elif pattern == "name":  # every query looks at position 3 (a character's name), wherever it is
            a[i, min(i, 3)] = 1.0
    return a[None, None]


@pytest.mark.parametrize("pattern,kind,distance", [("previous", "local", 1.0), ("first", "first-token", None),
                                                   ("name", "semantic", None)])
def test_classification_of_known_maps(pattern, kind, distance):
    T = 40
    [head] = stats_from_totals(summarise_attention(synthetic_maps(T, pattern)))
    assert head.kind == kind
    if distance is not None:
        assert head.mean_distance == pytest.approx(distance)
    expected_name_distance = sum(i - 3 for i in range(MIN_QUERY, T)) / (T - MIN_QUERY)
    if pattern == "name":
        assert head.mean_distance == pytest.approx(expected_name_distance)
        assert head.entropy == 0.0


def test_classify_rule_thresholds():
    assert classify(local_mass=0.5, first_token_mass=0.1, entropy=0.9) == "local"
    assert classify(local_mass=0.49, first_token_mass=0.49, entropy=0.5) == "semantic"
    assert classify(local_mass=0.49, first_token_mass=0.49, entropy=0.85) == "diffuse"
    assert classify(local_mass=0.6, first_token_mass=0.6, entropy=0.1) == "first-token"
    assert LOCAL_WINDOW == 4


def test_running_top_k_matches_a_full_sort():
    torch.manual_seed(0)
    activations = torch.randn(100, 6)
    tracker = RunningTopK(k=5, neurons=6)
    for start in range(0, 100, 17):  # uneven chunks, as texts of different lengths give
        tracker.add(activations[start : start + 17], start)
    expected = activations.topk(5, dim=0)
    assert torch.equal(tracker.values, expected.values)
    assert torch.equal(tracker.positions, expected.indices)
    assert torch.allclose(tracker.variance().float(), activations.var(0, unbiased=False), atol=1e-5)


def test_neuron_tuned_to_one_token_ranks_first_with_that_token(tok):
    # Layer 0's residual is the embedding when attention writes nothing; token " was" alone has a component
    # on dimension 0, and only neuron 5 reads dimension 0, so neuron 5 fires exactly on " was".
    model = tiny_llama(len(tok), hidden=32, layers=2)
    [was] = tok.encode(" was", add_special_tokens=False)
    layer = model.model.layers[0]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        model.model.embed_tokens.weight[:, 0] = 0.0
        model.model.embed_tokens.weight[was, 0] = 5.0
        layer.mlp.gate_proj.weight.zero_()
        layer.mlp.up_proj.weight.zero_()
        layer.mlp.gate_proj.weight[5, 0] = 1.0
        layer.mlp.up_proj.weight[5, 0] = 1.0
    texts = [" ".join(STORIES)] + STORIES
    n_was = sum(tok.encode(t, add_special_tokens=False).count(was) for t in texts)
    assert n_was >= 3

    trackers, ids = neuron_activations(model, tok, texts, context_length=256, top_k=3)
    [best, *_] = top_neurons(trackers, ids, tok, per_layer=4)[0]

    assert best.neuron == 5
    assert [c.token for c in best.top] == [" was"] * 3
    assert all(c.activation > 1.0 for c in best.top)
    assert all(ids[c.text][c.position] == was for c in best.top)
    assert all(c.before + c.token + c.after in texts[c.text] for c in best.top)


def test_inspect_report_pages_and_figures(tok, tmp_path):
    from distill.evaluate.inspect_report import inspect_model

    model = tiny_llama(len(tok), hidden=32, layers=2, heads=4)
    result = inspect_model(model, tok, LONG_TEXTS, tmp_path, context_length=64, neurons_per_layer=3, top_k=2,
                           heatmap_samples=2, heatmap_tokens=20, title="<script>alert(1)</script>")

    assert len(result["heads"]) == 8 and sum(result["kinds"].values()) == 8
    assert [len(layer) for layer in result["neurons"]] == [3, 3]
    for name in ("index.html", "layer_0.html", "layer_1.html", "inspect.json", "heads_scatter.png", "heads_grid.png",
                 "attention_sample_0.png", "attention_sample_1.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    index = (tmp_path / "index.html").read_text()
    assert "Rule." in index and "first-token if at least 50%" in index and "layer_1.html" in index
    assert "Inside the student &lt;script&gt;alert(1)&lt;/script&gt;" in index and "<script>" not in index
    assert len(re.findall(r"<tr><td>L\dH\d</td><td class='([a-z-]+)'>\1</td>", index)) == 8  # a row per head
    assert "<mark>" in (tmp_path / "layer_0.html").read_text()
    assert (tmp_path / "heads_grid.png").read_bytes()[:4] == b"\x89PNG"


def test_neuron_contexts_are_escaped_on_the_layer_page():
    from distill.evaluate.inspect_report import _layer_page
    from distill.evaluate.neurons import NeuronContext, NeuronReport

    context = NeuronContext(activation=2.5, text=0, position=3, before="x <script>", token="alert(1)", after="</script>")
    page = _layer_page(0, [NeuronReport(layer=0, neuron=7, variance=1.0, mean=0.5, top=[context])], total=64, layers=2)
    assert "x &lt;script&gt;<mark>alert(1)</mark>&lt;/script&gt;" in page and "<script>" not in page
    assert "<b>layer 0</b> · <a href='layer_1.html'>layer 1</a>" in page and "The 1 neurons (of 64)" in page
