#!/usr/bin/env python3
"""Reference values for grin's evaluation metrics (ROUGE-L, two-sample KS test, ROC-AUC).

How to run (from the repository root):

    python3 -m venv .venv-ref
    .venv-ref/bin/pip install -r crates/grin/tests/data/requirements-ref.txt
    .venv-ref/bin/python crates/grin/tests/data/metrics/make_metric_refs.py

Deterministic (fixed numpy seed); rewrites rouge.json, ks.json, auc.json, porter_stems.json
in this directory. All floats are float64 written with repr (round-trip exact).

ROUGE-L: rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
         .score(target=reference, prediction=prediction).
  rouge_score's tokenizer: text.lower() (Python, Unicode-aware), replace every run of
  characters outside [a-z0-9] by a space (so é, ü, CJK, punctuation all become separators
  and vanish), split on whitespace, Porter-stem (nltk.stem.porter.PorterStemmer() in its
  default NLTK_EXTENSIONS mode -- NOT Snowball/Porter2) only tokens longer than 3 chars,
  drop tokens not matching ^[a-z0-9]+$.  LCS over the token lists; precision = lcs/len(pred),
  recall = lcs/len(ref), f = 2pr/(p+r) (0 if p+r == 0); all three are 0 if either token
  list is empty.  The tokens are included in every case to help debugging.

KS: scipy.stats.ks_2samp(x, y, alternative="two-sided", method="auto").
  Rule in the installed scipy (1.17.1, scipy/stats/_stats_py.py):
    MAX_AUTO_N = 10000; method "auto" -> "exact" if max(n1, n2) <= 10000 else "asymp".
    There is no n1*n2 product rule any more: e.g. 200 vs 180 uses the EXACT method.
    "exact" falls back to "asymp" (with a RuntimeWarning) only if the exact computation
    hits a floating-point error or gives a probability outside [0, 1].
    Exact: h = round(D * lcm(n1, n2)); D is replaced by h / lcm; if h == 0 then p = 1.
      n1 == n2: _compute_prob_outside_square(n, h); else _compute_outer_prob_inside_method.
    Asymp (two-sided): p = scipy.stats.kstwo.sf(D, round(n1*n2/(n1+n2))).
    p is clipped to [0, 1].
  Each case records method_auto (the method "auto" actually used, found by applying the rule
  and watching for the fallback warning) plus pvalue_exact (method="exact"; null if that fell
  back) and pvalue_asymp (method="asymp") for the same data.

ROC-AUC: sklearn.metrics.roc_auc_score(labels, scores) (label 1 = positive), ties count 1/2;
  cross-checked against scipy Mann-Whitney U / (n_pos * n_neg).
"""

import json
import os
import warnings

import nltk
import numpy as np
import rouge_score
import scipy
import sklearn
from nltk.stem import porter
from rouge_score import rouge_scorer, tokenize
from scipy import stats
from sklearn.metrics import roc_auc_score

HERE = os.path.dirname(os.path.abspath(__file__))
VERSIONS = {
    "scipy": scipy.__version__,
    "numpy": np.__version__,
    "rouge_score": getattr(rouge_score, "__version__", "0.1.2"),
    "nltk": nltk.__version__,
    "sklearn": sklearn.__version__,
}


def dump(name, obj, indent=1):
    with open(os.path.join(HERE, name), "w") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False, allow_nan=False)
        f.write("\n")


# ------------------------------------------------------------------------------------- ROUGE

ROUGE_CASES = [
    ("identical", "the cat sat on the mat", "the cat sat on the mat"),
    ("empty_prediction", "", "the cat sat on the mat"),
    ("empty_reference", "the cat sat on the mat", ""),
    ("both_empty", "", ""),
    ("only_punctuation_prediction", "?!... --- ,,,", "the cat sat"),
    ("case_and_punctuation", "The CAT, sat -- on the MAT!!!", "the cat sat on the mat."),
    ("hyphen_and_apostrophe", "It's a well-known state-of-the-art model.", "it s a well known state of the art model"),
    ("stem_run", "He was running and she runs", "he ran and she was running"),
    ("stem_study", "The studies were about studying", "she studied the study"),
    ("stem_connect", "connection connected connecting connects", "they connect the connections"),
    ("stem_short_words_not_stemmed", "cats dogs was has", "cat dog wa ha"),
    ("stem_porter_vs_porter2", "generously fairly happily", "generous fair happy"),
    ("stem_nltk_irregular", "dying lying skies news", "die lie sky news"),
    ("numbers", "In 2023 there were 42 cases, 3.14 percent", "there were 42 cases in 2024 and 3 14 percent"),
    ("unicode_accents", "café résumé naïve Zürich", "cafe resume naive zurich"),
    ("unicode_only_cjk", "東京は日本の首都です", "東京は日本の首都です"),
    ("unicode_mixed_cjk", "Paris 是 法国 的 首都 capital", "paris is the capital"),
    ("unicode_umlaut_split", "Müller über alles", "m ller ber alles"),
    ("repeated_words", "the the the the the", "the cat the dog the"),
    ("repeated_prediction_longer", "dog dog dog dog dog dog dog dog", "dog"),
    ("reordered_words", "mat the on sat cat the", "the cat sat on the mat"),
    ("partial_overlap", "harry potter went to hogwarts school", "harry went to the wizarding school"),
    ("no_overlap", "alpha beta gamma", "delta epsilon zeta"),
    ("single_token_match", "yes", "yes"),
    (
        "long_sentence",
        "Harry Potter is a fictional character who attends Hogwarts School of Witchcraft and "
        "Wizardry, where he befriends Ron Weasley and Hermione Granger and eventually defeats "
        "the dark wizard Lord Voldemort after many years of struggle.",
        "The character Harry Potter studied at the Hogwarts School of Witchcraft and Wizardry; "
        "his closest friends were Hermione Granger and Ron Weasley, and together they fought "
        "against Lord Voldemort, the dark wizard who had murdered his parents.",
    ),
    (
        "long_answer_vs_short_reference",
        "The answer to the question is that the author was born in the city of London in the "
        "year 1965 and later moved to Edinburgh where she wrote most of her books.",
        "born in 1965",
    ),
    ("whitespace_variants", "  tabs\tand\nnewlines   everywhere  ", "tabs and newlines everywhere"),
]


def make_rouge():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    stemmer = porter.PorterStemmer()
    out = []
    for name, pred, ref in ROUGE_CASES:
        s = scorer.score(target=ref, prediction=pred)["rougeL"]
        out.append(
            {
                "name": name,
                "prediction": pred,
                "reference": ref,
                "rougeL_recall": float(s.recall),
                "rougeL_precision": float(s.precision),
                "rougeL_fmeasure": float(s.fmeasure),
                "prediction_tokens": tokenize.tokenize(pred, stemmer),
                "reference_tokens": tokenize.tokenize(ref, stemmer),
            }
        )
    dump("rouge.json", out)

    words = sorted(
        set(
            w
            for _, p, r in ROUGE_CASES
            for w in tokenize.tokenize(p, None) + tokenize.tokenize(r, None)
        )
        | set(
            "running runs ran run studies studying studied study connection connected connecting "
            "connects generously generous fairly happily happy dying lying tying skies sky news "
            "innings outing canning proceed exceed succeed caresses ponies ties caress cats "
            "feed agreed plastered bled motoring sing conflated troubled sized hopping tanned "
            "falling hissing fizzed failing filing happy relational conditional rational "
            "valenci hesitanci digitizer conformabli radicalli differentli vileli analogousli "
            "vietnamization predication operator feudalism decisiveness hopefulness callousness "
            "formaliti sensitiviti sensibiliti triplicate formative formalize electriciti "
            "electrical hopeful goodness revival allowance inference airliner gyroscopic "
            "adjustable defensible irritant replacement adjustment dependent adoption homologou "
            "communism activate angulariti homologous effective bowdlerize probate rate cease "
            "controll roll wizardry witchcraft voldemort eventually befriends"
            .split()
        )
    )
    dump(
        "porter_stems.json",
        {
            "note": "nltk.stem.porter.PorterStemmer() (NLTK_EXTENSIONS mode) as used by rouge_score; "
            "rouge_score only stems tokens with len > 3",
            "nltk_version": nltk.__version__,
            "stems": {w: stemmer.stem(w) for w in words},
        },
    )
    return len(out)


# ---------------------------------------------------------------------------------------- KS


def ks_case(name, x, y):
    x = [float(v) for v in x]
    y = [float(v) for v in y]
    n1, n2 = len(x), len(y)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = stats.ks_2samp(x, y, alternative="two-sided", method="auto")
    fell_back = any("Switching to" in str(m.message) for m in w)
    method = "exact" if max(n1, n2) <= 10000 and not fell_back else "asymp"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        re_ = stats.ks_2samp(x, y, alternative="two-sided", method="exact")
    exact_ok = not any("Switching to" in str(m.message) for m in w)
    with np.errstate(divide="ignore", invalid="ignore"):
        ra = stats.ks_2samp(x, y, alternative="two-sided", method="asymp")
    pa = float(ra.pvalue)
    note = {}
    if fell_back:
        note["note"] = (
            "scipy's exact computation returned a probability slightly > 1 (rounding), so "
            "_attempt_exact_2kssamp reported failure and 'auto' fell back to 'asymp'"
        )
    return {
        "name": name,
        "n1": n1,
        "n2": n2,
        "x": x,
        "y": y,
        "statistic": float(r.statistic),
        "pvalue": float(r.pvalue),
        "method_auto": method,
        "statistic_location": float(r.statistic_location),
        "statistic_sign": int(r.statistic_sign),
        "pvalue_exact": float(re_.pvalue) if exact_ok else None,
        # null when kstwo.sf is undefined (round(n1*n2/(n1+n2)) == 0, i.e. 1 vs 1)
        "pvalue_asymp": pa if np.isfinite(pa) else None,
        **note,
    }


def make_ks():
    rng = np.random.default_rng(20240601)

    def normal(n, loc=0.0, scale=1.0):
        return np.round(rng.normal(loc, scale, n), 6).tolist()

    cases = [
        ks_case("identical_small", [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),
        ks_case("one_vs_one_distinct", [0.5], [0.7]),
        ks_case("one_vs_one_equal", [1.0], [1.0]),
        ks_case("two_vs_three", [0.1, 0.9], [0.3, 0.4, 1.5]),
        ks_case("one_vs_five", [3.0], [1.0, 2.0, 4.0, 5.0, 6.0]),
        ks_case("one_vs_five_extreme", [10.0], [1.0, 2.0, 3.0, 4.0, 5.0]),
        ks_case("three_vs_fifty", [0.5, 1.2, 2.0], normal(50)),
        ks_case("separated_5_vs_5", [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]),
        ks_case("separated_10_vs_7", list(range(10)), [100 + i for i in range(7)]),
        ks_case("ties_within", [1, 1, 2, 2, 3], [2, 2, 3, 3, 4, 4]),
        ks_case("ties_across_integers", [0, 1, 1, 2, 3, 3, 3, 5], [1, 1, 2, 3, 4, 4, 5, 5, 6]),
        ks_case("all_values_equal", [2, 2, 2], [2, 2, 2, 2]),
        ks_case("interleaved_7_vs_7", [1, 3, 5, 7, 9, 11, 13], [2, 4, 6, 8, 10, 12, 14]),
        ks_case("negative_and_duplicates", [-3.5, -1, -1, 0, 2.25, 2.25], [-2, -1, 0, 0, 0, 1, 3]),
        ks_case("normal_20_vs_20_same", normal(20), normal(20)),
        ks_case("normal_30_vs_45_shift", normal(30), normal(45, 0.5)),
        ks_case("normal_100_vs_100_shift", normal(100), normal(100, 0.3)),
        ks_case("normal_200_vs_180", normal(200), normal(180, 0.2)),
        ks_case("separated_100_vs_100_tiny_p", list(range(100)), list(range(100, 200))),
        ks_case("uniform_50_vs_normal_60", np.round(rng.uniform(-1, 1, 50), 6).tolist(), normal(60)),
        ks_case("normal_500_vs_700", normal(500), normal(700, 0.1, 1.2)),
        # max(n1, n2) > 10000 -> method "auto" uses the asymptotic distribution.
        ks_case(
            "asymp_10001_vs_40_integers",
            rng.integers(0, 50, 10001).tolist(),
            rng.integers(5, 55, 40).tolist(),
        ),
    ]
    dump(
        "ks.json",
        {
            "note": "scipy.stats.ks_2samp(x, y, alternative='two-sided', method='auto'); "
            "auto = exact iff max(n1, n2) <= 10000 (scipy 1.17.1), else asymp. "
            "pvalue_exact / pvalue_asymp: same data with method forced.",
            "versions": VERSIONS,
            "cases": cases,
        },
        indent=None,
    )
    return cases


# --------------------------------------------------------------------------------------- AUC


def make_auc():
    rng = np.random.default_rng(7)
    raw = [
        ("perfect", [0.9, 0.8, 0.7], [0.1, 0.2, 0.3]),
        ("inverted", [0.1, 0.2], [0.8, 0.9, 0.7]),
        ("all_tied", [0.5, 0.5, 0.5], [0.5, 0.5]),
        ("one_tie_pair", [0.3, 0.6], [0.3, 0.1]),
        ("ties_mixed", [1, 2, 2, 3, 3, 3], [0, 1, 2, 2, 3]),
        ("single_each_tie", [1.0], [1.0]),
        ("single_each_win", [2.0], [1.0]),
        ("integer_scores_many_ties", rng.integers(0, 5, 30).tolist(), rng.integers(0, 4, 25).tolist()),
        ("random_normal_shift", np.round(rng.normal(0.5, 1, 40), 6).tolist(), np.round(rng.normal(0, 1, 60), 6).tolist()),
        ("negative_scores", [-0.1, -2.0, -0.5], [-1.0, -3.0, -0.5, -0.05]),
    ]
    out = []
    for name, pos, neg in raw:
        pos = [float(v) for v in pos]
        neg = [float(v) for v in neg]
        scores = pos + neg
        labels = [1] * len(pos) + [0] * len(neg)
        auc = float(roc_auc_score(labels, scores))
        u = stats.mannwhitneyu(pos, neg, alternative="two-sided", method="asymptotic").statistic
        auc_mw = float(u) / (len(pos) * len(neg))
        assert abs(auc - auc_mw) < 1e-12, (name, auc, auc_mw)
        out.append(
            {
                "name": name,
                "scores": scores,
                "labels": labels,
                "positive_scores": pos,
                "negative_scores": neg,
                "auc": auc,
                "auc_mannwhitney": auc_mw,
            }
        )
    dump(
        "auc.json",
        {
            "note": "sklearn.metrics.roc_auc_score(labels, scores), label 1 = positive; "
            "equals Mann-Whitney U(pos, neg) / (n_pos * n_neg), ties count 1/2.",
            "versions": VERSIONS,
            "cases": out,
        },
    )
    return out


def main():
    n = make_rouge()
    print(f"rouge.json: {n} cases")
    for c in make_ks():
        print(
            f"ks {c['name']:32s} n=({c['n1']},{c['n2']}) D={c['statistic']:.4f} "
            f"p={c['pvalue']:.4g} auto={c['method_auto']} exact={c['pvalue_exact']} asymp={c['pvalue_asymp']}"
        )
    for c in make_auc():
        print(f"auc {c['name']:28s} {c['auc']}")


if __name__ == "__main__":
    main()
