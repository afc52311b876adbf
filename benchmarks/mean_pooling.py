"""A measurement, not a feature: mpnet fine-tuned on mean-pooled tokens instead of its <s> token.

    python benchmarks/mean_pooling.py train --workdir WORK --config configs/exp/mpnet.yaml \
        --set train.run=mpnet2_mean train.epochs=2 'train.folds=[0,1]'

all-mpnet-base-v2 was trained by sentence-transformers with mean pooling, while
`MPNetForSequenceClassification` classifies from the <s> token. This script swaps the pooling
for one process: the class's forward mean-pools the last hidden states over the attention mask
and feeds the result to the same classification head (dense, tanh, out_proj), then runs
`python -m pipeline` with the arguments given. Compare its fold scores with a `train.run=mpnet2`
run on the same folds.csv. The saved fold models are plain MPNet checkpoints that `submit` and
`package` would read with <s> pooling, so a run made here is for its OOF scores only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.mpnet import modeling_mpnet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.__main__ import main  # noqa: E402
from pipeline.runtime import mean_pool  # noqa: E402


def mean_pooled_forward(self: Any, input_ids: torch.Tensor | None = None,
                        attention_mask: torch.Tensor | None = None, **_: Any) -> SequenceClassifierOutput:
    pooled = mean_pool(self.mpnet(input_ids, attention_mask=attention_mask)[0], attention_mask)
    head = self.classifier
    return SequenceClassifierOutput(logits=head.out_proj(head.dropout(torch.tanh(head.dense(head.dropout(pooled))))))


if __name__ == "__main__":
    modeling_mpnet.MPNetForSequenceClassification.forward = mean_pooled_forward
    sys.exit(main(sys.argv[1:]))
