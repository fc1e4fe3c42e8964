"""`nc-jax verify --suite followups`: the judgement of one check, and the suite end to end (slow)."""

import json

import pytest

from nc_jax import cli
from nc_jax._cli_followups import Check, _judge
from nc_jax.landscape import Summary, Verdict


def _summary(verdict, values, counts=None):
    fields = dict.fromkeys(Summary._fields)
    fields.update(verdict=verdict, minimum_values=tuple(values), reasons=("why",),
                  counts=counts or {"below_closed_form": 0})
    return Summary(**fields)


def test_a_minimum_off_the_closed_form_levels_refutes_the_claim():
    check = Check("deep", "claim", "src", None, ("SPURIOUS",), levels=(0.05, 0.2, 0.5))
    assert _judge(check, _summary(Verdict.SPURIOUS, [0.05, 0.5])) == ("confirmed", None)
    ours, problem = _judge(check, _summary(Verdict.SPURIOUS, [0.05, 0.31]))
    assert ours == "refuted" and "0.31" in problem


def test_unexpected_verdicts_and_missing_evidence():
    check = Check("ufm", "benign", "src", None, ("BENIGN",))
    assert _judge(check, _summary(Verdict.INCONCLUSIVE, []))[0] == "inconclusive"
    ours, problem = _judge(check, _summary(Verdict.SPURIOUS, [0.1, 0.2]))
    assert ours == "refuted" and "expected BENIGN, found SPURIOUS" in problem
    ours, _ = _judge(check, _summary(Verdict.BENIGN, [0.1], {"below_closed_form": 1}))
    assert ours == "refuted"


def test_merged_minority_check_confirms_the_threshold():
    """The dense-Hessian check: strict saddle at R = 0.7 R_c, second order at 1.3 R_c, the
    escape curvature on its closed form (MSE with bias and CE)."""
    import jax

    from nc_jax._cli_followups import _merged_minority_saddles

    out = _merged_minority_saddles(jax.random.key(0))
    assert out["our_verdict"] == "confirmed" and out["problem"] is None
    assert len(out["reasons"]) == 4


def test_the_default_checks_include_the_custom_checks():
    from nc_jax._cli_followups import _checks

    custom = [c for c in _checks(quick=True) if c.custom is not None]
    assert [c.name for c in custom] == ["deep ReLU UFM, L = 4: DNC vs lower rank",
                                        "imbalanced (R,R,1,1) with bias, merged minority"]


def test_deep_relu_check_judges_its_two_claims(monkeypatch):
    """Confirmed when K = 4 goes below f_DNC and K = 2 reaches it; refuted when K = 2 goes
    below; inconclusive when a search stops short (stubbed searches: the judgement only)."""
    import jax
    import numpy as np

    from nc_jax import deep_ufm
    from nc_jax._cli_followups import _deep_relu_dnc

    def stub(outcomes):
        def search(problem, *, key, num_inits):
            below, reached = outcomes[problem.num_classes]
            return deep_ufm.DNCSearch(1.0, np.ones(1), 0.9 if below else 1.0 if reached else 1.5, None, 0.0,
                                      below, reached or below, 1)
        return search

    for outcomes, verdict in (({2: (False, True), 4: (True, True)}, "confirmed"),
                              ({2: (True, True), 4: (True, True)}, "refuted"),
                              ({2: (False, False), 4: (True, True)}, "inconclusive"),
                              ({2: (False, True), 4: (False, True)}, "inconclusive")):
        monkeypatch.setattr(deep_ufm, "search_below_dnc", stub(outcomes))
        out = _deep_relu_dnc(jax.random.key(0))
        assert out["our_verdict"] == verdict, (outcomes, out)
        assert (out["problem"] is not None) == (verdict == "refuted")


@pytest.mark.slow
def test_followups_suite_quick_confirms_every_claim(tmp_path):
    rc = cli.main(["--cache-dir", "off", "verify", "--suite", "followups", "--quick", "--workdir", str(tmp_path / "w")])
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert rc == 0, results["problems"]
    assert [r["our_verdict"] for r in results["rows"]] == ["confirmed"] * len(results["rows"])
    assert any(r["name"].startswith("deep ReLU") for r in results["rows"])
    deep = next(r for r in results["rows"] if r["name"].startswith("deep linear"))
    assert deep["explorer_verdict"] == "SPURIOUS" and len(deep["minimum_values"]) >= 2


def test_report_marks_checks_without_exploration_and_lists_the_evidence():
    from nc_jax._cli_followups import _evidence, _table

    rows = [{"name": "ufm", "claim": "benign", "source": "src", "our_verdict": "confirmed",
             "explorer_verdict": "BENIGN", "reasons": ["32 of 32 runs certified"], "minimum_values": [0.125]},
            {"name": "custom", "claim": "threshold", "source": "ours", "our_verdict": "confirmed",
             "explorer_verdict": "n/a (no exploration)", "reasons": ["R=0.7: lambda_min -0.01"],
             "minimum_values": []}]
    table = _table(rows)
    assert table[2].endswith("| BENIGN | 0.125 |")
    assert table[3].endswith("| n/a (no exploration) | n/a (no exploration) |")
    evidence = _evidence(rows)
    assert "### custom\n\n- R=0.7: lambda_min -0.01\n" in evidence
    assert "### ufm\n\n- 32 of 32 runs certified\n" in evidence
