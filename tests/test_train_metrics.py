"""fastadapter eval's metrics on hand-made caption lists, each answer worked out by hand here: distinct-n, the
within-caption repetition rate, the top caption's share, CIDEr-D's limits, BLEU's reference padding, recall@k."""

import pytest
import torch

from fastadapter.train import metrics

CAPTIONS = ["a red circle", "a red circle", "a blue blue square", "red"]


def test_distinct_n_by_hand():
    # unigrams: a, red, circle, a, red, circle, a, blue, blue, square, red -> 11, distinct {a, red, circle, blue,
    # square} = 5; bigrams: (a red) (red circle) x2, (a blue) (blue blue) (blue square) -> 7, distinct 5
    assert metrics.distinct(CAPTIONS, 1) == pytest.approx(5 / 11)
    assert metrics.distinct(CAPTIONS, 2) == pytest.approx(5 / 7)
    assert metrics.distinct(["one"], 2) == 0.0


def test_repetition_and_top_caption_share_by_hand():
    assert metrics.repetition_rate(CAPTIONS) == pytest.approx(1 / 11)  # the second "blue" only
    assert metrics.top_caption_share(CAPTIONS) == pytest.approx(2 / 4)
    assert metrics.top_caption_share(["A red circle.", "a red circle", "x"]) == pytest.approx(2 / 3)  # tokenized
    collapsed = metrics.degeneration(["a dog"] * 9 + ["a cat"])
    assert collapsed["top_caption_share"] == pytest.approx(0.9) and collapsed["distinct_1"] == pytest.approx(3 / 20)


def test_cider_d_is_zero_without_overlap_and_rewards_matches():
    refs = [["a red circle on a blue background", "a red circle"], ["a green square", "a green square on white"],
            ["a yellow triangle", "a yellow triangle on black"]]
    assert metrics.cider_d(["purple", "orange", "pink"], refs) == 0.0
    good = metrics.cider_d(["a red circle", "a green square", "a yellow triangle"], refs)
    half = metrics.cider_d(["a red circle", "orange", "pink"], refs)
    assert good > half > 0


def test_bleu_padding_keeps_the_score_of_repeated_references():
    import sacrebleu

    hyps = ["a red circle on a blue background", "a green square"]
    padded = metrics.bleu(hyps, [["a red circle on a blue background", "a red circle"], ["a green square"]])
    explicit = sacrebleu.corpus_bleu(hyps, [["a red circle on a blue background", "a green square"],
                                            ["a red circle", "a green square"]]).score
    assert padded == pytest.approx(explicit) and padded > 50


def test_recall_at_k_by_hand():
    similarity = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8]])
    positives = torch.tensor([[False, False, True], [True, False, False]])
    # row 0's ranking 0, 2, 1: its positive (2) is second; row 1's ranking 2, 1, 0: its positive (0) is third
    assert metrics.recall_at(similarity, positives, ks=(1, 2, 3)) == {"r@1": 0.0, "r@2": 0.5, "r@3": 1.0}
