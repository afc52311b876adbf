"""A fine-tuned fold model as int8 ONNX, for CPU inference in the bundle (package.onnx=true)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from pipeline import runtime
from pipeline.core.files import DataError


def export_onnx(src: Path, dst: Path) -> None:
    """The fold model as ONNX (torch's TorchScript exporter, dynamic batch and length), then
    onnxruntime's dynamic int8 quantisation of its weights; only the int8 file is kept."""
    try:
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as e:
        raise DataError(f"package.onnx=true needs onnx and onnxruntime ({e.name} is missing): "
                        "pip install onnx onnxruntime") from None
    model = AutoModelForSequenceClassification.from_pretrained(str(src)).float().eval()
    enc = AutoTokenizer.from_pretrained(str(src))(["an example", "a longer example text"], padding=True,
                                                  return_tensors="pt")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                "logits": {0: "batch"}}
        with warnings.catch_warnings():  # tracer notes on shape checks; tests pin the export across lengths
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (enc["input_ids"], enc["attention_mask"]), str(fp32), dynamo=False,
                              input_names=["input_ids", "attention_mask"], output_names=["logits"],
                              dynamic_axes=axes, opset_version=17)
        quantize_dynamic(str(fp32), str(dst / runtime.ONNX_FILE), weight_type=QuantType.QInt8)
