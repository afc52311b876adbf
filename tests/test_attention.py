"""MPNet through scaled_dot_product_attention: the same function as transformers' eager path.

all-mpnet-base-v2 is the packaged base encoder; transformers 5.x runs MPNet's attention
eagerly (float32 scores and probabilities saved for the backward pass). ``use_sdpa`` gives it
SDPA with the relative-position bias as the additive mask: outputs and every gradient (the
bias's embedding included) must match the eager model's."""

import copy

import numpy as np
import pytest
import torch
from conftest import NEG, POS, synthetic_texts

from pipeline.core.config import TrainConfig
from pipeline.modeling.attention import use_sdpa
from pipeline.modeling.base import FoldData
from pipeline.modeling.syncs import training_loop_syncs
from pipeline.modeling.transformer import FoldTrainer, load_tokenizer


def _mpnet(vocab: int = 300, pad: int = 0):
    from transformers import MPNetConfig, MPNetForSequenceClassification

    torch.manual_seed(0)
    cfg = MPNetConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=130, pad_token_id=pad, num_labels=3,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return MPNetForSequenceClassification(cfg)


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory, tiny_bert):
    """A 2-layer MPNet from its config with tiny_bert's tokenizer, saved like a hub model."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny_mpnet")
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    tok.save_pretrained(folder)
    _mpnet(len(tok), tok.pad_token_id).save_pretrained(folder)
    return folder


def test_sdpa_mpnet_matches_eager_outputs_and_gradients():
    eager = _mpnet()
    fused = copy.deepcopy(eager)
    assert use_sdpa(fused) == 2
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 300, (4, 37), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0  # padded rows: the mask and the position bias together
    mask[3, 5:] = 0
    labels = torch.tensor([0, 2, 1, 2])
    outs = []
    for model in (eager, fused):
        model.train()  # dropout is 0: train mode takes the same path as training
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        outs.append((out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (le, ge), (lf, gf) = outs
    assert torch.allclose(le, lf, atol=1e-5), (le - lf).abs().max()
    bias = "mpnet.encoder.relative_attention_bias.weight"
    assert ge[bias].abs().sum() > 0  # the position bias is learnt: its gradient reaches it through SDPA
    for name in ge:
        assert torch.allclose(ge[name], gf[name], atol=1e-5, rtol=1e-4), name


def test_models_with_sdpa_already_or_without_a_rule_are_left_alone(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    bert = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    assert use_sdpa(bert) == 0


def test_an_mpnet_fold_trains_through_sdpa_without_host_syncs(tiny_mpnet):
    texts, labels = synthetic_texts(80, [NEG, POS], 2)
    data = FoldData(texts[:64], np.array(labels[:64]), texts[64:], np.array(labels[64:]), texts[64:70])
    cfg = TrainConfig(backbone=str(tiny_mpnet), max_len=32, epochs=2, batch_size=8, lr=1e-3, log_every=4,
                      save_checkpoints=False, precision="fp32")
    syncs, out = training_loop_syncs(FoldTrainer(cfg, 2, "f1", 0), data, load_tokenizer(cfg))
    assert syncs.counts.get("loop", 0) == 0, syncs.where[:10]
    assert type(out.extra["model"].mpnet.encoder.layer[0].attention.attn).__name__ == "MPNetSelfAttention"
    assert out.extra["model"].mpnet.encoder.layer[0].attention.attn.forward.__func__.__name__ == "_mpnet_sdpa_forward"
