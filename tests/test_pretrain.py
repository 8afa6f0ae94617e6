"""The backbone's pretraining batches: what each objective sees and is asked for."""

import numpy as np
import pytest

from configs.pretrain_tiny_vilt import get_config
from feddat_jax.models.vilt_checkpoint import CheckpointError
from feddat_jax.pretrain.train import BatchMaker, build_tokenizer, pretrain
from feddat_jax.pretrain.corpus import build_corpus, corpus_texts


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory):
    corpus = build_corpus(12, 32, seed=5)
    texts = corpus_texts(corpus, np.random.default_rng(0))
    return corpus, build_tokenizer(texts, tmp_path_factory.mktemp("tok"))


def test_qa_rows_hold_the_question_alone_and_its_answer_index(corpus_and_tokenizer):
    corpus, tok = corpus_and_tokenizer
    answers = sorted({a for pairs in corpus.qa for _, a in pairs})
    maker = BatchMaker(corpus, tok, 32, seed=0, batch_size=10, answers=answers, qa_share=0.5)
    rows = maker.answering(np.random.default_rng(1), 40)
    pairs = {
        (tok.decode(tok(q)["input_ids"], skip_special_tokens=True), a)
        for qa in corpus.qa
        for q, a in qa
    }
    for ids, label in zip(rows["input_ids"], rows["qa_labels"]):
        text = tok.decode(ids, skip_special_tokens=True)
        # the question alone (no answer appended, nothing masked), labelled with its own answer
        assert (text, answers[label]) in pairs, (text, answers[label])
    assert (rows["mlm_labels"] == -1).all() and (rows["itm_weight"] == 0).all()


def test_batches_without_a_qa_share_have_no_qa_rows(corpus_and_tokenizer):
    corpus, tok = corpus_and_tokenizer
    maker = BatchMaker(corpus, tok, 32, 0, 16, ["yes"], caption_share=0.625, qa_share=0.0)
    batch = maker(3)
    assert len(batch["qa_labels"]) == 16 and (batch["qa_labels"] == -1).all()
    assert (batch["kind"] != 4).all()


def test_a_second_stage_without_its_first_is_refused_naming_the_command(tmp_path):
    cfg = get_config("smoke")
    cfg.init_from = str(tmp_path / "missing_stage1")
    with pytest.raises(CheckpointError, match="pretrain_tiny_vilt.py:stage1"):
        pretrain(cfg, tmp_path / "out")
