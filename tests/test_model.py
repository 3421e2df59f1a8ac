import pytest
import torch

from binlab.nn.model import Classifier, ModelConfig, component_names


def test_shapes_and_named_components():
    cfg = ModelConfig(vocab_size=50, max_len=16, d_model=24, n_heads=3, d_ff=40, n_layers=2)
    m = Classifier(cfg).eval()
    ids = torch.randint(1, 50, (5, 9))
    ids[0, 5:] = 0  # padding
    assert m(ids).shape == (5, 4)
    hs = m.hidden_states(ids)
    assert len(hs) == 3 and all(h.shape == (5, 9, 24) for h in hs)
    names = component_names(m)
    for i in range(2):
        for part in ("attn.q", "attn.k", "attn.v", "attn.o", "ffn.up", "ffn.down"):
            assert f"layers.{i}.{part}" in names
    assert {"embed.token", "embed.pos", "head"} <= set(names)


def test_padding_does_not_change_logits():
    m = Classifier(ModelConfig(vocab_size=50, max_len=16, d_model=16, n_heads=2, d_ff=32, n_layers=2)).eval()
    ids = torch.randint(1, 50, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    torch.testing.assert_close(m(ids), m(padded), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw,match", [({"d_model": 10, "n_heads": 3}, "divisible"), ({"dropout": 1.0}, "dropout"), ({"n_layers": 0}, "n_layers")])
def test_config_validates(kw, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kw)


def test_too_long_sequence_is_a_clear_error():
    m = Classifier(ModelConfig(vocab_size=20, max_len=8, d_model=8, n_heads=2, d_ff=8, n_layers=1))
    with pytest.raises(ValueError, match="position table"):
        m(torch.ones(1, 9, dtype=torch.long))


def test_minilm_matches_reference_bert():
    transformers = pytest.importorskip("transformers")
    from binlab.nn.pretrained import load_minilm, minilm_config, minilm_dir

    cfg = minilm_config(n_layers=2, max_len=64)
    ours = load_minilm(cfg).eval()
    ref = transformers.BertModel.from_pretrained(str(minilm_dir()), add_pooling_layer=False).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (3, 20), generator=g)
    ids[:, 0] = 101
    ids[1, 12:] = 0
    mask = (ids != 0).long()
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), output_hidden_states=True).hidden_states
        mine = ours.hidden_states(ids)
    for layer in range(3):  # embeddings, layer 0, layer 1
        valid = mask.bool()
        torch.testing.assert_close(mine[layer][valid], theirs[layer][valid], rtol=1e-5, atol=1e-5)
