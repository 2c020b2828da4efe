"""Scoring systems with sacreBLEU: BLEU and chrF with signatures, bootstrap 95% confidence
intervals, paired bootstrap significance against baselines, and the off-target rate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest

N_BOOTSTRAP = 1000


def _paired(systems: Mapping[str, Sequence[str]], references: Sequence[str], baseline: str,
            n_bootstrap: int) -> tuple[dict, dict]:
    named = [(baseline, list(systems[baseline]))] + [(n, list(h)) for n, h in systems.items() if n != baseline]
    test = PairedTest(named, {"BLEU": BLEU(), "chrF": CHRF()}, [list(references)], test_type="bs",
                      n_samples=n_bootstrap)
    signatures, scores = test()
    by_system = {name: {metric: scores[metric][i] for metric in scores if metric != "System"}
                 for i, name in enumerate(scores["System"])}
    return signatures, by_system


def score_systems(systems: Mapping[str, Sequence[str]], references: Sequence[str], baselines: Sequence[str],
                  n_bootstrap: int = N_BOOTSTRAP) -> pd.DataFrame:
    """One row per system: BLEU and chrF with 95% CIs, and p-values against each baseline.

    The p-value columns (``bleu_p_vs_A``, ...) come from sacreBLEU's paired bootstrap test; the
    baseline's own row has no p-value against itself. The seed is sacreBLEU's (SACREBLEU_SEED).
    """
    if not systems:
        raise ValueError("no systems to score")
    for name, hyps in systems.items():
        if len(hyps) != len(references):
            raise ValueError(f"system {name} has {len(hyps)} outputs for {len(references)} references")
    rows = {name: {"system": name} for name in systems}
    signatures = None
    for baseline in baselines:
        if baseline not in systems:
            continue
        signatures, scored = _paired(systems, references, baseline, n_bootstrap)
        for name, metrics in scored.items():
            row = rows[name]
            for metric, key in (("BLEU", "bleu"), ("chrF2", "chrf")):
                result = metrics[metric]
                row[key] = result.score
                row[f"{key}_ci95"] = result.ci
                if name != baseline:
                    row[f"{key}_p_vs_{baseline}"] = result.p_value
    table = pd.DataFrame(list(rows.values()))
    for column in [c for c in table if c.endswith(("_ci95",)) or "_p_vs_" in c]:
        table[column] = table[column].astype(float)
    table["bleu_signature"] = str(signatures["BLEU"]) if signatures else ""
    table["chrf_signature"] = str(signatures["chrF2"]) if signatures else ""
    table["segments"] = len(references)
    return table
