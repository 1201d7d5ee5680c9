"""retrieval_metrics against a brute-force loop and hand-made cases."""
import math

import pytest
import torch

from graphneg.metrics import retrieval_metrics


def brute(emb, lab, ks, ref=None, ref_lab=None):
    same = ref is None
    if same:
        ref, ref_lab = emb, lab
    e = torch.nn.functional.normalize(emb.double(), dim=1)
    r = torch.nn.functional.normalize(ref.double(), dim=1)
    rec = {k: [] for k in ks}
    maps, rps = [], []
    for i in range(e.size(0)):
        cands = [(float(e[i] @ r[j]), j) for j in range(r.size(0)) if not (same and j == i)]
        cands.sort(key=lambda t: -t[0])
        rel = [int(ref_lab[j] == lab[i]) for _, j in cands]
        R = sum(rel)
        if R == 0:
            continue
        for k in ks:
            rec[k].append(1.0 if any(rel[:k]) else 0.0)
        hits, ap = 0, 0.0
        for pos in range(R):
            if rel[pos]:
                hits += 1
                ap += hits / (pos + 1)
        maps.append(ap / R)
        rps.append(sum(rel[:R]) / R)
    out = {f"recall@{k}": sum(v) / len(v) for k, v in rec.items()}
    out["map@r"] = sum(maps) / len(maps)
    out["r_precision"] = sum(rps) / len(rps)
    return out


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_matches_brute_force(chunk):
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(40, 6, generator=g)
    lab = torch.randint(0, 5, (40,), generator=g)
    lab[0] = 9  # a singleton class: excluded from all metrics
    ks = (1, 2, 4, 8)
    got = retrieval_metrics(emb, lab, ks=ks, chunk_size=chunk, nmi=False)
    ref = brute(emb, lab, ks)
    for key, val in ref.items():
        assert math.isclose(got[key], val, rel_tol=0, abs_tol=1e-9), key
    assert got["num_excluded"] == 1.0 and got["num_queries"] == 39.0


def test_separate_gallery_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    q, ql = torch.randn(15, 4, generator=g), torch.randint(0, 3, (15,), generator=g)
    r, rl = torch.randn(25, 4, generator=g), torch.randint(0, 3, (25,), generator=g)
    got = retrieval_metrics(q, ql, ks=(1, 5), ref_embeddings=r, ref_labels=rl, chunk_size=4, nmi=False)
    ref = brute(q, ql, (1, 5), r, rl)
    for key, val in ref.items():
        assert math.isclose(got[key], val, abs_tol=1e-9), key


def test_perfect_clusters_give_one():
    centers = torch.eye(4) * 10
    lab = torch.arange(4).repeat_interleave(5)
    emb = centers[lab] + 0.01 * torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    res = retrieval_metrics(emb, lab)
    for key in ("recall@1", "recall@8", "map@r", "r_precision", "nmi"):
        assert res[key] == pytest.approx(1.0), key


def test_query_excluded_from_own_neighbours():
    # two classes, one sample each close to the other class: with the query counted as its own
    # neighbour Recall@1 would be 1.0; excluded it must be 0.
    emb = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]])
    lab = torch.tensor([0, 1, 1, 0])
    res = retrieval_metrics(emb, lab, ks=(1,), nmi=False)
    assert res["recall@1"] == 0.0
    assert res["map@r"] == 0.0


def test_hand_computed_map_at_r():
    # query 0 (class 0) has R=2 same-class refs; its ranking: [class0, class1, class0] -> AP = (1/1)/2 = 0.5
    emb = torch.tensor([[1.0, 0.0], [0.95, 0.31], [0.8, 0.6], [0.6, 0.8], [-1.0, 0.0]])
    lab = torch.tensor([0, 0, 1, 0, 1])
    res = retrieval_metrics(emb[:1], lab[:1], ks=(1, 2), ref_embeddings=emb[1:], ref_labels=lab[1:], nmi=False)
    assert res["map@r"] == pytest.approx(0.5)
    assert res["r_precision"] == pytest.approx(0.5)
    assert res["recall@1"] == 1.0


def test_errors():
    emb = torch.randn(6, 3)
    with pytest.raises(ValueError, match=r"expected shape \[6\]"):
        retrieval_metrics(emb, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="single sample"):
        retrieval_metrics(emb, torch.arange(6))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(emb * float("nan"), torch.zeros(6, dtype=torch.long))


def test_recall_at_k_above_the_reference_count_is_nan_with_a_warning():
    """Issue 20: ks=(1, 100) on 12 samples reported recall@100 = 1.0. K <= N - 1 (same set) or <= the
    gallery size is required; a larger K is nan with a warning naming the limit; the rest is unchanged."""
    from graphneg.metrics.retrieval import UndefinedRecallWarning

    g = torch.Generator().manual_seed(3)
    emb, lab = torch.randn(12, 5, generator=g), torch.arange(4).repeat(3)
    with pytest.warns(UndefinedRecallWarning, match=r"K = \[100\].*only 11 references"):
        got = retrieval_metrics(emb, lab, ks=(1, 11, 100), nmi=False)
    assert math.isnan(got["recall@100"])
    ref = brute(emb, lab, (1, 11))
    for key, val in ref.items():
        assert math.isclose(got[key], val, abs_tol=1e-9), key
    assert got["recall@11"] == 1.0  # K = N - 1 ranks every reference: allowed, trivially 1
    # a gallery: the limit is its size (no query excluded)
    with pytest.warns(UndefinedRecallWarning, match=r"K = \[8\].*only 7 references.*gallery of 7"):
        got = retrieval_metrics(emb[:5], lab[:5], ks=(1, 7, 8), ref_embeddings=emb[5:], ref_labels=lab[5:], nmi=False)
    assert math.isnan(got["recall@8"]) and not math.isnan(got["recall@7"])
    ref = brute(emb[:5], lab[:5], (1, 7), emb[5:], lab[5:])
    assert math.isclose(got["recall@1"], ref["recall@1"], abs_tol=1e-9)


def test_no_warning_when_every_k_fits():
    import warnings

    emb, lab = torch.randn(12, 5), torch.arange(4).repeat(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retrieval_metrics(emb, lab, ks=(1, 11), nmi=False)
