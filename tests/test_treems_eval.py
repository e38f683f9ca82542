"""TreeMS's task B metrics (AUC, GAUC, MRR, HR@k) and the head / tail split of scenarios."""
import numpy as np

from tfgb.evaluation.scenario import list_metrics, tail_leaves, utilisation_png


def test_list_metrics_against_hand_computed_values():
    scores = np.array([[0.9, 0.1, 0.5, 0.5],   # u0: positive col 0, rank 1
                       [0.2, 0.3, 0.2, 0.8],   # u0: positive col 2 (0.2), tied with col 0: rank 4 (pessimistic)
                       [0.4, 0.6, 0.1, 0.0]])  # u1: positive col 1, rank 1
    label = np.array([0, 2, 1])
    initiator = np.array([0, 0, 1])
    m = list_metrics(scores, label, initiator)
    # pooled AUC: positives 0.9, 0.2, 0.6 against negatives 0.1 0.5 0.5 0.2 0.3 0.8 0.4 0.1 0.0
    neg = [0.1, 0.5, 0.5, 0.2, 0.3, 0.8, 0.4, 0.1, 0.0]
    def credit(p):
        return sum(1.0 if p > n else 0.5 if p == n else 0.0 for n in neg)
    assert np.isclose(m["auc"], (credit(0.9) + credit(0.2) + credit(0.6)) / 27)
    # GAUC: u0's positives 0.9, 0.2 over its negatives 0.1 0.5 0.5 0.2 0.3 0.8; u1: 0.6 over 0.4 0.1 0.0
    u0_neg = [0.1, 0.5, 0.5, 0.2, 0.3, 0.8]
    u0 = (sum(1.0 if 0.9 > n else 0.0 for n in u0_neg) + sum(1.0 if 0.2 > n else 0.5 if 0.2 == n else 0 for n in u0_neg)) / 12
    assert np.isclose(m["gauc"], (8 * u0 + 4 * 1.0) / 12)
    assert np.isclose(m["mrr"], (1 + 1 / 4 + 1) / 3)
    assert np.isclose(m["hr@5"], 1.0) and m["lists"] == 3
    assert np.isclose(list_metrics(scores[:, :4], label, initiator)["hr@10"], 1.0)


def test_tail_is_the_rare_leaves_holding_the_last_share_of_groups():
    counts = np.array([0, 0, 50, 30, 10, 6, 3, 1, 0])  # node ids 0, 1 are no leaves; leaf 8 unseen in training
    tail = tail_leaves(counts, tail_share=0.2)
    # cumulative before each leaf in frequency order: 0, 50, 80, 90, 96, 99, 100 -> tail where >= 80
    assert tail[2:].tolist() == [False, False, True, True, True, True, True]
    assert not tail_leaves(counts, tail_share=0.0)[2:4].any()


def test_utilisation_png_is_written(tmp_path):
    path = utilisation_png({"with L_aux": np.full((3, 8), 1 / 8), "without": np.eye(3, 8)}, tmp_path / "u.png")
    with open(path, "rb") as fh:
        data = fh.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
