"""experiments/device_check.py --small: the accelerator check's own code on the CPU at tiny sizes, so it
cannot rot before a GPU is lent. Checks the report's structure and that its values are finite and
consistent with independent computations written here."""
import json
import math

import numpy as np
import pytest
import torch

from scripts import load_script

dc = load_script("experiments/device_check.py")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check")
    rep = dc.main(["--out", str(out), "--small"])
    return rep, out


def test_report_files_and_structure(report):
    rep, out = report
    on_disk = json.loads((out / "report.json").read_text())
    assert set(on_disk["sections"]) == set(dc.SECTIONS) == set(rep["sections"])
    md = (out / "report.md").read_text()
    for name, sec in on_disk["sections"].items():
        assert f"## {name}: " in md
        assert {"status", "wall_s", "budget_s", "rows", "skipped", "notes"} <= set(sec)
        assert sec["status"] == "ok", (name, sec.get("error"), sec["notes"])
        assert sec["skipped"] == [], name  # the --small budgets leave nothing out
        assert 0 <= sec["wall_s"] <= on_disk["wall_s"]
    assert on_disk["meta"]["small"] is True and on_disk["meta"]["device"] == "cpu"


def test_gpu_tests_section_runs_the_marker_and_skips_without_cuda(report):
    sec = report[0]["sections"]["gpu_tests"]
    names = [r["test"] for r in sec["rows"]]
    assert len(names) >= 15 and all("test_gpu" in n for n in names)
    assert {r["outcome"] for r in sec["rows"]} == {"skipped"}  # no CUDA here: skip with the reason
    assert all("CUDA" in r["message"] for r in sec["rows"])


def _ok(rows):
    return [r for r in rows if r.get("status") == "ok"]


def test_gca_rows_finite_and_dense_reference_agrees(report):
    from graphneg.graph import batch_graph

    rows = report[0]["sections"]["gca_step"]["rows"]
    cfg = dc.SMALL
    planned = {(e, b, "float32", "eager") for e, sizes in (("complete", cfg["complete_sizes"]),
                                                           ("knn", cfg["knn_sizes"])) for b in sizes}
    have = {(r["edges"], r["B"], r["dtype"], r["mode"]) for r in _ok(rows)}
    assert planned <= have
    for r in rows:
        assert r["status"] == "ok", r
        assert 0 < r["min_s"] <= r["median_s"] and math.isfinite(r["loss_value"]) and r["peak_MiB"] is None
        n_cls, m = dc._bench_gca().layout(r["B"])
        y = torch.arange(n_cls).repeat(m)
        if r["mode"] == "dense" or r["edges"] == "complete":
            assert r["E"] == r["B"] ** 2  # complete graph with self-loops = the dense [B, B] edge tensor
        else:  # the class-aware kNN graph, rebuilt here
            z0 = torch.randn(r["B"], cfg["dim"], generator=torch.Generator().manual_seed(2))
            assert r["E"] == batch_graph(z0, y, edges="knn", k=cfg["knn_k"]).edge_index.size(1)
    dense = [r for r in _ok(rows) if r["mode"] == "dense"]
    assert dense and all(r["loss_rel_diff_vs_graph"] < 1e-5 for r in dense)


def test_backbone_rows_consistent(report):
    rows = report[0]["sections"]["backbones"]["rows"]
    assert len(_ok(rows)) == 2 * len(dc.SMALL["configs"])
    for r in rows:
        c, m = dc.SMALL["layout_override"]
        assert r["B"] == c * m and r["steps_timed"] == dc.SMALL["backbone_steps"][1]
        assert r["images_per_s"] == pytest.approx(r["B"] / r["median_step_s"])
    pairs = {(r["config"], r["gca_hng"]): r for r in rows}
    for name in dc.SMALL["configs"]:
        with_, without = pairs[(name, True)], pairs[(name, False)]
        assert with_["gca_overhead"] == pytest.approx(with_["median_step_s"] / without["median_step_s"])


def test_retrieval_rows_agree_with_a_numpy_recall_at_1(report):
    sec = report[0]["sections"]["retrieval"]
    rc = dc.SMALL["retrieval"]
    emb, labels = dc.sop_like(rc["n"], rc["dim"], rc["classes"])
    x = emb.numpy() / np.linalg.norm(emb.numpy(), axis=1, keepdims=True)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    lab = labels.numpy()
    recall1 = float((lab[s.argmax(1)] == lab).mean())  # every class has >= 2 members: no query excluded
    graphneg_row = sec["rows"][0]
    assert graphneg_row["recall@1"] == pytest.approx(recall1, abs=1e-12)
    faiss_row = sec["rows"][1]
    # the dev extra installs faiss-cpu: a missing one is a failure here, not a skip
    assert faiss_row.get("status") != "not installed", "faiss-cpu (dev extra) is missing: pip install -e '.[dev]'"
    assert graphneg_row["metrics_agree_with_faiss"] is True
    assert faiss_row["recall@1"] == pytest.approx(recall1, abs=1e-12)


def test_loss_rows_and_infonce_value(report):
    rows = report[0]["sections"]["losses"]["rows"]
    assert {(r["loss"], r["B"]) for r in _ok(rows)} == {(n, b) for n in ("InfoNCE", "HCL", "UnReMix")
                                                        for b in dc.SMALL["loss_sizes"]}
    b, d = dc.SMALL["loss_sizes"][0], dc.SMALL["loss_dim"]
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)]).double()
    z = torch.nn.functional.normalize(z, dim=1)
    logits = z @ z.t() / 0.5  # NT-Xent (SimCLR eq. 1), temperature 0.5, the query itself excluded
    logits.fill_diagonal_(-math.inf)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    ref = torch.nn.functional.cross_entropy(logits, target).item()
    info = [r for r in rows if r["loss"] == "InfoNCE"][0]
    assert info["loss_value"] == pytest.approx(ref, rel=1e-5)
    assert all(math.isfinite(r["loss_value"]) and r["median_s"] > 0 for r in rows)


def test_full_run_refuses_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the full run would start")
    with pytest.raises(SystemExit):
        dc.main(["--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        dc.main(["--out", str(tmp_path), "--small", "--sections", "nope"])
