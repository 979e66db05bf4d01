"""Text backbones: the real all-MiniLM-L6-v2 directory, causal-LM multiple-choice scoring, tokenizer handling."""

from __future__ import annotations

import pytest
import torch

from bayespeft.assets import find_minilm_dir
from bayespeft.models import ChoiceLM, ModelConfig, build_model
from bayespeft.models.hf_text import letter_token_ids
from bayespeft.models.tiny import bpe_tokenizer, tiny_model_config

PROMPTS = [
    "Question: Which of these is a mammal? A. shark B. whale C. trout D. eel Answer:",
    "Question: What do plants need? Answer:",
    "Hi Answer:",
]


@pytest.fixture(scope="module")
def minilm():
    return build_model(ModelConfig(name="hf_text", path=str(find_minilm_dir()), max_length=64), 2).eval()


def test_minilm_loads_real_pretrained_encoder_with_new_head(minilm):
    from transformers import AutoModel

    ref = AutoModel.from_pretrained(str(find_minilm_dir()), local_files_only=True).eval()
    tok = minilm.input_spec.tokenizer
    enc = tok(["a cat sat on the mat", "hello"], padding=True, return_tensors="pt")
    assert set(enc) == {"input_ids", "attention_mask", "token_type_ids"}
    assert minilm.head_names == ["backbone.classifier"] and minilm.backbone.classifier.out_features == 2
    with torch.no_grad():  # encoder identical to the shipped checkpoint: same hidden states
        got = minilm.backbone.bert(**enc).last_hidden_state
        want = ref(**enc).last_hidden_state
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        # logits = classifier(pooler(CLS)) -- recomputed by hand from the reference encoder
        pooled = ref.pooler(want)
        hand = minilm.backbone.classifier(pooled)
        torch.testing.assert_close(minilm(**enc), hand, rtol=1e-6, atol=1e-6)
    assert minilm.default_targets == ["query", "value"]
    assert minilm.input_spec.max_length == 64


def test_text_from_config_without_tokenizer_is_an_error():
    with pytest.raises(ValueError, match="needs model.overrides.model_type"):
        build_model(ModelConfig(name="hf_text", pretrained=False), 2, tokenizer=bpe_tokenizer())
    with pytest.raises(ValueError, match="needs a tokenizer: set model.tokenizer"):
        build_model(ModelConfig(name="hf_causal_lm", pretrained=False, overrides={"model_type": "gpt2"}), 4)


def _causal(model_type: str = "gpt2", **kw):
    over = {"gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2},
            "llama": {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "num_key_value_heads": 2, "intermediate_size": 64}}[model_type]
    return ModelConfig(name="hf_causal_lm", pretrained=False, overrides=over, **kw)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_choice_logits_are_next_token_logits_at_last_real_token(model_type):
    tok = bpe_tokenizer()
    model = build_model(_causal(model_type), 4, tokenizer=tok).eval()
    assert isinstance(model, ChoiceLM) and model.task == "multiple_choice"
    ids = [tok.encode(" " + c, add_special_tokens=False) for c in "ABCD"]
    assert all(len(i) == 1 for i in ids) and model.letter_ids.tolist() == [i[0] for i in ids]
    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()  # the batch really is padded (on the right)
    with torch.no_grad():
        out = model(**enc)
        for b, prompt in enumerate(PROMPTS):  # reference: each prompt alone, no padding, full logits
            alone = tok(prompt, return_tensors="pt")["input_ids"]
            full = model.base_network(input_ids=alone).logits[0, -1]
            torch.testing.assert_close(out[b], full[model.letter_ids], rtol=1e-5, atol=1e-5)


def test_causal_tokenizer_from_directory_sets_pad_and_right_padding(tmp_path):
    tok = bpe_tokenizer(tmp_path / "tok")
    tok_dir = tmp_path / "tok"
    model = build_model(_causal(tokenizer=str(tok_dir)), 4)
    spec_tok = model.input_spec.tokenizer
    assert spec_tok.pad_token == spec_tok.eos_token == "<|endoftext|>" and spec_tok.padding_side == "right"
    assert model.backbone.config.vocab_size == len(tok)
    assert model.default_targets == ["c_attn"]


def test_causal_lm_loads_saved_directory(tmp_path):
    tok = bpe_tokenizer()
    src = build_model(_causal("llama"), 4, tokenizer=tok).eval()
    src.base_network.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = build_model(ModelConfig(name="hf_causal_lm", path=str(tmp_path)), 4).eval()
    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**enc), src(**enc), rtol=0, atol=0)
    assert model.default_targets == ["q_proj", "v_proj"]


def test_multi_token_letters_are_rejected():
    no_merges = bpe_tokenizer(vocab_size=257)  # bytes only: " A" is two tokens
    with pytest.raises(ValueError, match=r"answer letter ' A' is 2 tokens .*must be a single token"):
        letter_token_ids(no_merges, 4)
    with pytest.raises(ValueError, match="between 2 and 26 answer letters"):
        letter_token_ids(no_merges, 27)


def test_wordpiece_letters_are_single_tokens():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(find_minilm_dir()), local_files_only=True)
    letters, ids = letter_token_ids(tok, 4)
    assert letters == ["A", "B", "C", "D"] and tok.convert_ids_to_tokens(ids) == ["a", "b", "c", "d"]


def test_tokenizer_larger_than_embedding_is_rejected():
    with pytest.raises(ValueError, match="the tokenizer has .* tokens but the model's embedding has only 100 rows"):
        build_model(
            tiny_model_config("hf_text", overrides={"model_type": "bert", "vocab_size": 100, "hidden_size": 32,
                                                    "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}),
            2, tokenizer=bpe_tokenizer(),
        )


def test_last_positions_with_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert ChoiceLM.last_positions(mask).tolist() == [2, 4, 0]
    with pytest.raises(ValueError, match="at least one non-pad token"):
        ChoiceLM.last_positions(torch.zeros(1, 3, dtype=torch.long))


def test_bpe_tokenizer_prints_nothing(capfd):
    """The tokenizers trainer's progress bar wrote blank lines to stdout (3 in ``examples/bayesian_lora_arc.py --tiny``)."""
    bpe_tokenizer()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
