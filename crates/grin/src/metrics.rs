//! Evaluation metrics as pure functions on numbers and strings: ROUGE-L, the
//! two-sample Kolmogorov-Smirnov test, ROC-AUC, the TOFU truth ratio and
//! forget quality, memorisation scores and membership-inference scores.
//!
//! Nothing here touches tensors, files or the network: the evaluation code
//! turns model outputs (per-token log-probabilities, argmax ids, generated
//! text) into plain slices and calls these functions, so every definition can
//! be tested on hand-computed values and on values from the reference
//! libraries (`rouge_score`, scipy, sklearn; see `tests/data/metrics/`).
//!
//! Definitions follow `shared/design/grin.md` ("Metrics"), which follows TOFU /
//! open-unlearning where they exist; each function's doc names its source and
//! any deliberate difference from it.
//!
//! **Sign convention for membership-inference scores:** every MIA score in
//! this module is oriented so that a *higher* score means "more likely a
//! member" (a training example). open-unlearning orients its scores the other
//! way (higher = non-member) and labels the holdout set as the positive class;
//! the two conventions give the same ROC-AUC, so [`mia_auc`] matches
//! open-unlearning's `mia_*` AUCs (1.0 = forget set clearly recognised as
//! members, 0.5 = indistinguishable from holdout).

use std::io::Write;

/// Errors for inputs a metric is not defined on. Messages never contain the
/// input values themselves (they may be derived from personal data).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// A slice that must not be empty was empty.
    #[error("{what}: no values")]
    Empty { what: &'static str },

    /// Two slices that must be aligned have different lengths.
    #[error("{what}: lengths differ ({left} vs {right})")]
    LengthMismatch {
        what: &'static str,
        left: usize,
        right: usize,
    },

    /// A value was NaN, or non-finite where a finite value is required.
    #[error("{what}: NaN or non-finite value at index {index}")]
    NotFinite { what: &'static str, index: usize },

    /// A value or parameter is outside its domain.
    #[error("{what}: {message}")]
    OutOfDomain { what: &'static str, message: String },
}

type Result<T> = std::result::Result<T, MetricsError>;

fn non_empty(what: &'static str, xs: &[f64]) -> Result<()> {
    if xs.is_empty() {
        return Err(MetricsError::Empty { what });
    }
    Ok(())
}

fn no_nan(what: &'static str, xs: &[f64]) -> Result<()> {
    match xs.iter().position(|v| v.is_nan()) {
        Some(index) => Err(MetricsError::NotFinite { what, index }),
        None => Ok(()),
    }
}

fn all_finite(what: &'static str, xs: &[f64]) -> Result<()> {
    match xs.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricsError::NotFinite { what, index }),
        None => Ok(()),
    }
}

fn same_len(what: &'static str, left: usize, right: usize) -> Result<()> {
    if left != right {
        return Err(MetricsError::LengthMismatch { what, left, right });
    }
    Ok(())
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

// ------------------------------------------------------------------ ROUGE-L

/// ROUGE-L precision, recall and F-measure.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RougeScore {
    /// LCS length / number of prediction tokens.
    pub precision: f64,
    /// LCS length / number of reference tokens (the TOFU "ROUGE-L recall").
    pub recall: f64,
    /// 2·P·R / (P + R), 0 when P + R = 0.
    pub fmeasure: f64,
}

/// ROUGE-L of `prediction` against `reference`, exactly as Google's
/// `rouge_score` computes it with `RougeScorer(["rougeL"], use_stemmer=True)`
/// (`score(target=reference, prediction=prediction)`): both texts go through
/// [`rouge_tokenize`]; the LCS length `l` of the two token lists gives
/// precision `l/|pred|`, recall `l/|ref|` and F = 2PR/(P+R). All three are 0
/// when either token list is empty (as in `rouge_score`).
///
/// Checked against `rouge_score` 0.1.2 on every case of
/// `tests/data/metrics/rouge.json` (bit-identical, including Unicode input).
pub fn rouge_l(prediction: &str, reference: &str) -> RougeScore {
    let pred = rouge_tokenize(prediction);
    let refr = rouge_tokenize(reference);
    if pred.is_empty() || refr.is_empty() {
        return RougeScore {
            precision: 0.0,
            recall: 0.0,
            fmeasure: 0.0,
        };
    }
    let lcs = lcs_len(&refr, &pred) as f64;
    let precision = lcs / pred.len() as f64;
    let recall = lcs / refr.len() as f64;
    let fmeasure = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    RougeScore {
        precision,
        recall,
        fmeasure,
    }
}

fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// `rouge_score`'s default tokenizer with stemming (`rouge_score/tokenize.py`):
/// lower-case the text (Unicode-aware, as Python's `str.lower`), treat every
/// character outside `[a-z0-9]` as a separator (so `café` gives `caf`, and CJK
/// text gives no tokens), split, and Porter-stem ([`porter_stem`]) only the
/// tokens longer than 3 characters.
pub fn rouge_tokenize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut tokens = Vec::new();
    let mut cur = String::new();
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            cur.push(c);
        } else if !cur.is_empty() {
            tokens.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    tokens
        .into_iter()
        .map(|t| if t.len() > 3 { porter_stem(&t) } else { t })
        .filter(|t| !t.is_empty())
        .collect()
}

// ----------------------------------------------------------- Porter stemmer

const IRREGULAR: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// The Porter stemmer exactly as NLTK implements it in its default
/// `NLTK_EXTENSIONS` mode (`nltk.stem.porter.PorterStemmer().stem(word)`,
/// NLTK 3.x), which is what `rouge_score` uses. This is *not* Snowball /
/// Porter2: `generously` → `gener`, `fairly` → `fairli`, `dying` → `die`,
/// `skies` → `sky`. The word is lower-cased first; words of one or two
/// characters are returned as they are.
///
/// Checked against NLTK on every word of `tests/data/metrics/porter_stems.json`.
pub fn porter_stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some((_, stem)) = IRREGULAR.iter().find(|(w, _)| *w == lower) {
        return (*stem).to_string();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Vec<char> = lower.chars().collect();
    w = step1a(w);
    w = step1b(w);
    w = step1c(w);
    w = step2(w);
    w = step3(w);
    w = step4(w);
    w = step5a(w);
    w = step5b(w);
    w.into_iter().collect()
}

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// Porter's consonant: not a vowel, and `y` only when the letter before it is
/// a vowel (or it starts the word). Iterative over runs of `y`.
fn is_consonant(w: &[char], mut i: usize) -> bool {
    if is_vowel(w[i]) {
        return false;
    }
    if w[i] != 'y' {
        return true;
    }
    let mut negate = false;
    while i > 0 && w[i] == 'y' {
        negate = !negate;
        i -= 1;
    }
    is_vowel(w[i]) == negate
}

fn consonant_flags(w: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let f = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(f);
    }
    flags
}

/// Porter's m: the number of vowel-run → consonant-run transitions.
fn measure(stem: &[char]) -> usize {
    let f = consonant_flags(stem);
    f.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(stem: &[char]) -> bool {
    consonant_flags(stem).iter().any(|c| !c)
}

fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    let s: Vec<char> = suffix.chars().collect();
    w.len() >= s.len() && w[w.len() - s.len()..] == s[..]
}

fn strip(w: &[char], suffix: &str) -> Vec<char> {
    w[..w.len() - suffix.chars().count()].to_vec()
}

fn with(mut stem: Vec<char>, tail: &str) -> Vec<char> {
    stem.extend(tail.chars());
    stem
}

type Cond<'a> = &'a dyn Fn(&[char]) -> bool;

/// NLTK's `_apply_rule_list`: the first rule whose suffix matches decides;
/// if its condition fails the word is returned unchanged.
fn apply_rules(word: Vec<char>, rules: &[(&str, &str, Option<Cond>)]) -> Vec<char> {
    for (suffix, replacement, cond) in rules {
        if ends_with(&word, suffix) {
            let stem = strip(&word, suffix);
            return match cond {
                Some(c) if !c(&stem) => word,
                _ => with(stem, replacement),
            };
        }
    }
    word
}

fn step1a(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ies") && w.len() == 4 {
        return with(strip(&w, "ies"), "ie");
    }
    apply_rules(
        w,
        &[
            ("sses", "ss", None),
            ("ies", "i", None),
            ("ss", "ss", None),
            ("s", "", None),
        ],
    )
}

fn step1b(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ied") {
        let tail = if w.len() == 4 { "ie" } else { "i" };
        return with(strip(&w, "ied"), tail);
    }
    if ends_with(&w, "eed") {
        let stem = strip(&w, "eed");
        return if measure(&stem) > 0 { with(stem, "ee") } else { w };
    }
    let mut inter = None;
    for suffix in ["ed", "ing"] {
        if ends_with(&w, suffix) {
            let s = strip(&w, suffix);
            if contains_vowel(&s) {
                inter = Some(s);
                break;
            }
        }
    }
    let Some(inter) = inter else {
        return w;
    };
    for (suffix, replacement) in [("at", "ate"), ("bl", "ble"), ("iz", "ize")] {
        if ends_with(&inter, suffix) {
            return with(strip(&inter, suffix), replacement);
        }
    }
    if ends_double_consonant(&inter) {
        let last = inter[inter.len() - 1];
        return if matches!(last, 'l' | 's' | 'z') {
            inter
        } else {
            inter[..inter.len() - 1].to_vec()
        };
    }
    if measure(&inter) == 1 && ends_cvc(&inter) {
        return with(inter, "e");
    }
    inter
}

fn step1c(w: Vec<char>) -> Vec<char> {
    let cond = |stem: &[char]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(w, &[("y", "i", Some(&cond))])
}

fn step2(w: Vec<char>) -> Vec<char> {
    let m_pos = |stem: &[char]| measure(stem) > 0;
    if ends_with(&w, "alli") && m_pos(&strip(&w, "alli")) {
        return step2(with(strip(&w, "alli"), "al"));
    }
    let logi_stem = w[..w.len().saturating_sub(3)].to_vec();
    let logi = move |_: &[char]| measure(&logi_stem) > 0;
    let rules: &[(&str, &str, Option<Cond>)] = &[
        ("ational", "ate", Some(&m_pos)),
        ("tional", "tion", Some(&m_pos)),
        ("enci", "ence", Some(&m_pos)),
        ("anci", "ance", Some(&m_pos)),
        ("izer", "ize", Some(&m_pos)),
        ("bli", "ble", Some(&m_pos)),
        ("alli", "al", Some(&m_pos)),
        ("entli", "ent", Some(&m_pos)),
        ("eli", "e", Some(&m_pos)),
        ("ousli", "ous", Some(&m_pos)),
        ("ization", "ize", Some(&m_pos)),
        ("ation", "ate", Some(&m_pos)),
        ("ator", "ate", Some(&m_pos)),
        ("alism", "al", Some(&m_pos)),
        ("iveness", "ive", Some(&m_pos)),
        ("fulness", "ful", Some(&m_pos)),
        ("ousness", "ous", Some(&m_pos)),
        ("aliti", "al", Some(&m_pos)),
        ("iviti", "ive", Some(&m_pos)),
        ("biliti", "ble", Some(&m_pos)),
        ("fulli", "ful", Some(&m_pos)),
        ("logi", "log", Some(&logi)),
    ];
    apply_rules(w, rules)
}

fn step3(w: Vec<char>) -> Vec<char> {
    let m_pos = |stem: &[char]| measure(stem) > 0;
    apply_rules(
        w,
        &[
            ("icate", "ic", Some(&m_pos)),
            ("ative", "", Some(&m_pos)),
            ("alize", "al", Some(&m_pos)),
            ("iciti", "ic", Some(&m_pos)),
            ("ical", "ic", Some(&m_pos)),
            ("ful", "", Some(&m_pos)),
            ("ness", "", Some(&m_pos)),
        ],
    )
}

fn step4(w: Vec<char>) -> Vec<char> {
    let m_gt1 = |stem: &[char]| measure(stem) > 1;
    let ion = |stem: &[char]| measure(stem) > 1 && matches!(stem.last(), Some('s' | 't'));
    let rules: &[(&str, &str, Option<Cond>)] = &[
        ("al", "", Some(&m_gt1)),
        ("ance", "", Some(&m_gt1)),
        ("ence", "", Some(&m_gt1)),
        ("er", "", Some(&m_gt1)),
        ("ic", "", Some(&m_gt1)),
        ("able", "", Some(&m_gt1)),
        ("ible", "", Some(&m_gt1)),
        ("ant", "", Some(&m_gt1)),
        ("ement", "", Some(&m_gt1)),
        ("ment", "", Some(&m_gt1)),
        ("ent", "", Some(&m_gt1)),
        ("ion", "", Some(&ion)),
        ("ou", "", Some(&m_gt1)),
        ("ism", "", Some(&m_gt1)),
        ("ate", "", Some(&m_gt1)),
        ("iti", "", Some(&m_gt1)),
        ("ous", "", Some(&m_gt1)),
        ("ive", "", Some(&m_gt1)),
        ("ize", "", Some(&m_gt1)),
    ];
    apply_rules(w, rules)
}

fn step5a(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "e") {
        let stem = strip(&w, "e");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    w
}

fn step5b(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ll") && measure(&w[..w.len() - 1]) > 1 {
        return w[..w.len() - 1].to_vec();
    }
    w
}

// ------------------------------------------------------- two-sample KS test

/// How the p-value of [`ks_2samp_with`] is computed (scipy's `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsMode {
    /// scipy's `"auto"`: exact when `max(n1, n2) <= 10000`, else asymptotic;
    /// an exact computation that fails (probability outside [0, 1] from
    /// rounding) falls back to asymptotic.
    Auto,
    /// scipy's `"exact"` (with the same fallback, and asymptotic when
    /// `lcm(n1, n2)` does not fit an `i32`).
    Exact,
    /// scipy's `"asymp"`.
    Asymptotic,
}

/// The method that actually produced a KS p-value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KsMethod {
    /// Exact distribution of the two-sample statistic (Hodges / Viehmann).
    Exact,
    /// `scipy.stats.kstwo.sf(D, round(n1·n2/(n1+n2)))`.
    Asymptotic,
}

/// Result of a two-sided two-sample Kolmogorov-Smirnov test.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KsResult {
    /// D = sup |F1 − F2|. When the exact method was attempted, D is replaced
    /// by `h / lcm(n1, n2)` with `h = round(D · lcm)`, as scipy does.
    pub statistic: f64,
    /// Two-sided p-value, in [0, 1].
    pub pvalue: f64,
    /// How the p-value was computed.
    pub method: KsMethod,
}

/// Two-sided two-sample KS test, matching
/// `scipy.stats.ks_2samp(x, y, alternative="two-sided", method="auto")`
/// (scipy 1.17): statistic from the empirical CDFs with ties handled as
/// scipy does (`searchsorted(side="right")`); exact p-value when
/// `max(n1, n2) <= 10000` (`_compute_prob_outside_square` for equal sizes,
/// Viehmann's inside-method recursion otherwise), falling back to the
/// asymptotic p-value when the exact probability is not in [0, 1]; asymptotic
/// p-value `kstwo.sf(D, round_half_even(n1·n2/(n1+n2)))` otherwise (see
/// [`kstwo_sf`]).
///
/// Agreement with scipy on `tests/data/metrics/ks.json`: statistics
/// bit-identical; p-values within 1e-12 relative (see the tests).
///
/// Errors: an empty sample, or a NaN value.
pub fn ks_2samp(x: &[f64], y: &[f64]) -> Result<KsResult> {
    ks_2samp_with(x, y, KsMode::Auto)
}

/// [`ks_2samp`] with the p-value method chosen explicitly (scipy's `method`).
///
/// With [`KsMode::Asymptotic`] and one observation in each sample the
/// asymptotic distribution is undefined (`kstwo` with n = 0; scipy returns
/// NaN): this returns [`MetricsError::OutOfDomain`].
pub fn ks_2samp_with(x: &[f64], y: &[f64], mode: KsMode) -> Result<KsResult> {
    non_empty("ks_2samp x", x)?;
    non_empty("ks_2samp y", y)?;
    no_nan("ks_2samp x", x)?;
    no_nan("ks_2samp y", y)?;
    let mut a = x.to_vec();
    let mut b = y.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n1, n2) = (a.len(), b.len());
    let le = |s: &[f64], v: f64| s.partition_point(|e| *e <= v);
    let (mut max_s, mut min_diff) = (f64::NEG_INFINITY, f64::INFINITY);
    for &v in a.iter().chain(b.iter()) {
        let diff = le(&a, v) as f64 / n1 as f64 - le(&b, v) as f64 / n2 as f64;
        max_s = max_s.max(diff);
        min_diff = min_diff.min(diff);
    }
    let min_s = (-min_diff).clamp(0.0, 1.0);
    let mut d = if min_s > max_s { min_s } else { max_s };

    let (n1u, n2u) = (n1 as u64, n2 as u64);
    let g = gcd(n1u, n2u);
    let (n1g, n2g) = (n1u / g, n2u / g);
    let mut method = match mode {
        KsMode::Auto if n1.max(n2) <= 10_000 => KsMethod::Exact,
        KsMode::Auto | KsMode::Asymptotic => KsMethod::Asymptotic,
        KsMode::Exact if n1g as f64 >= i32::MAX as f64 / n2g as f64 => KsMethod::Asymptotic,
        KsMode::Exact => KsMethod::Exact,
    };
    let mut prob = f64::NAN;
    if method == KsMethod::Exact {
        let lcm = n1g * n2u;
        let h = (d * lcm as f64).round_ties_even() as u64;
        d = h as f64 / lcm as f64;
        let exact = if h == 0 {
            Some(1.0)
        } else if n1 == n2 {
            Some(prob_outside_square(n1u, h))
        } else {
            outer_prob_inside_method(n1u, n2u, g, h)
        };
        match exact {
            Some(p) if (0.0..=1.0).contains(&p) => prob = p,
            _ => method = KsMethod::Asymptotic,
        }
    }
    if method == KsMethod::Asymptotic {
        let (m, n) = if n1 >= n2 {
            (n1 as f64, n2 as f64)
        } else {
            (n2 as f64, n1 as f64)
        };
        let en = (m * n / (m + n)).round_ties_even();
        if en < 1.0 {
            return Err(MetricsError::OutOfDomain {
                what: "ks_2samp",
                message: "asymptotic p-value undefined for round(n1*n2/(n1+n2)) = 0".into(),
            });
        }
        prob = kstwo_sf(d, en as u64);
    }
    Ok(KsResult {
        statistic: d,
        pvalue: prob.clamp(0.0, 1.0),
        method,
    })
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Pr(D_{n,n} >= h/n), scipy's `_compute_prob_outside_square` (same
/// operation order, so the same rounding).
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0f64;
    let mut k = n / h;
    while k >= 0 {
        let mut p1 = 1.0f64;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

fn ceil_div(a: i64, b: i64) -> i64 {
    -(-a).div_euclid(b)
}

/// Proportion of lattice paths leaving the band |x/m − y/n| < h/lcm, scipy's
/// `_compute_outer_prob_inside_method` (Hodges 1958 with Viehmann's 1 − p
/// recursion, arXiv:2102.08037). `None` if the recursion would index outside
/// its buffer (never observed; treated as a failed exact computation).
fn outer_prob_inside_method(m: u64, n: u64, g: u64, h: u64) -> Option<f64> {
    let (mut m, mut n, g, h) = (m as i64, n as i64, g as i64, h as i64);
    if m < n {
        std::mem::swap(&mut m, &mut n);
    }
    let (mg, ng) = (m / g, n / g);
    let mut minj: i64 = 0;
    let mut maxj: i64 = ceil_div(h, mg).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    for v in a.iter_mut().take(maxj as usize) {
        *v = 0.0;
    }
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = (floor_div(ng * i - h, mg) + 1).max(0).min(n);
        maxj = ceil_div(ng * i + h, mg).min(n + 1);
        if maxj <= minj {
            return Some(1.0);
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let src = *a.get((jj + minj - lastminj) as usize)?;
            val = (src * i as f64 + val * j as f64) / (i + j) as f64;
            *a.get_mut(jj as usize)? = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let start = (maxj - minj) as usize;
            let end = ((maxj - minj + (lastlen - curlen)) as usize).min(len_a);
            for v in a.iter_mut().take(end).skip(start) {
                *v = 1.0;
            }
        }
    }
    a.get((maxj - minj - 1) as usize).copied()
}

// ------------------------------------------- one-sample KS distribution (kstwo)

fn pow2(e: i32) -> f64 {
    // 2^e for -1022 <= e <= 1023, exactly.
    f64::from_bits(((e + 1023) as u64) << 52)
}

fn ldexp(mut x: f64, mut e: i64) -> f64 {
    while e > 1000 {
        x *= pow2(1000);
        e -= 1000;
    }
    while e < -1000 {
        x *= pow2(-1000);
        e += 1000;
    }
    x * pow2(e as i32)
}

const E128: i64 = 128;

/// Survival function of the one-sample two-sided KS statistic D_n,
/// Pr(D_n >= d): a port of `scipy.stats.kstwo.sf(d, n)` (scipy's
/// `_kolmogn(n, d, cdf=False)`, Simard & L'Ecuyer 2011), branch for branch:
/// Ruben-Gambino closed forms near the ends, `2·smirnov(n, d)` for d >= 0.5
/// and large n·d², the Durbin matrix (Marsaglia-Tsang-Wang) and Pomeranz
/// recursions for small n, and the Pelz-Good expansion for large n.
///
/// Precision: scipy partly works in x87 extended precision and computes
/// `smirnov` in double-double; this port is f64 (the Smirnov sum in log space
/// with error-free transformations), within 3e-14 relative of scipy on the
/// tested points (n up to 200 000, p down to 1e-80). `n = 0` gives NaN
/// (undefined, as in scipy).
pub fn kstwo_sf(d: f64, n: u64) -> f64 {
    if n == 0 || d.is_nan() {
        return f64::NAN;
    }
    // rv_continuous.sf: support is (0.5/n, 1).
    if d <= 0.5 / n as f64 {
        return 1.0;
    }
    if d >= 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    let t = nf * d;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let prob = if n <= 140 {
            let mut p = 1.0;
            for i in 1..=n {
                p *= i as f64 * (1.0 / nf) * (2.0 * t - 1.0);
            }
            p
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return (1.0 - prob).clamp(0.0, 1.0);
    }
    if t >= nf - 1.0 {
        return (2.0 * (1.0 - d).powf(nf)).clamp(0.0, 1.0);
    }
    if d >= 0.5 {
        return (2.0 * smirnov_sf(n, d)).clamp(0.0, 1.0);
    }
    let nxsquared = t * d;
    if n <= 140 {
        if nxsquared <= 0.754693 {
            return (1.0 - kolmogn_dmtw_cdf(n, d)).clamp(0.0, 1.0);
        }
        if nxsquared <= 4.0 {
            return (1.0 - kolmogn_pomeranz_cdf(n, d)).clamp(0.0, 1.0);
        }
        return (2.0 * smirnov_sf(n, d)).clamp(0.0, 1.0);
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return (2.0 * smirnov_sf(n, d)).clamp(0.0, 1.0);
    }
    let cdf = if n <= 100_000 && nf * d.powf(1.5) <= 1.4 {
        kolmogn_dmtw_cdf(n, d)
    } else {
        kolmogn_pelz_good_cdf(n, d)
    };
    (1.0 - cdf).clamp(0.0, 1.0)
}

// Verbatim from scipy/stats/_ksstats.py (B_2j / (2j(2j − 1)), j = 8..1).
#[allow(clippy::excessive_precision)]
const STIRLING_COEFFS: [f64; 8] = [
    -2.955065359477124183e-2,
    6.4102564102564102564e-3,
    -1.9175269175269175269e-3,
    8.4175084175084175084e-4,
    -5.952380952380952381e-4,
    7.9365079365079365079e-4,
    -2.7777777777777777778e-3,
    8.3333333333333333333e-2,
];

/// log(n! / n^n) by Stirling's series (scipy `_log_nfactorial_div_n_pow_n`).
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    let rn = 1.0 / n;
    let x = rn / n;
    let poly = STIRLING_COEFFS.iter().fold(0.0, |acc, c| acc * x + c);
    n.ln() / 2.0 - n + (2.0 * std::f64::consts::PI).ln() / 2.0 + rn * poly
}

fn matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * m];
    for i in 0..m {
        for k in 0..m {
            let aik = a[i * m + k];
            if aik == 0.0 {
                continue;
            }
            for j in 0..m {
                c[i * m + j] += aik * b[k * m + j];
            }
        }
    }
    c
}

/// Pr(D_n <= d) by Durbin's matrix, as Marsaglia, Tsang & Wang (2003) compute
/// it (scipy `_kolmogn_DMTW`).
fn kolmogn_dmtw_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powi(j as i32)).collect();
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tt) * fac;
    let mut hm = vec![0.0; m * m];
    for i in 1..m {
        for (r, wv) in (i - 1..m).zip(w.iter()) {
            hm[r * m + i] = *wv;
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }
    let mut hpwr = vec![0.0; m * m];
    for i in 0..m {
        hpwr[i * m + i] = 1.0;
    }
    let (mut nn, mut expnt, mut hexpnt) = (n, 0i64, 0i64);
    let ep128 = pow2(E128 as i32);
    while nn > 0 {
        if nn % 2 == 1 {
            hpwr = matmul(&hpwr, &hm, m);
            expnt += hexpnt;
        }
        hm = matmul(&hm, &hm, m);
        hexpnt *= 2;
        if hm[(k - 1) * m + (k - 1)].abs() > ep128 {
            for x in hm.iter_mut() {
                *x /= ep128;
            }
            hexpnt += E128;
        }
        nn /= 2;
    }
    let mut p = hpwr[(k - 1) * m + (k - 1)];
    let nf = n as f64;
    let em128 = pow2(-(E128 as i32));
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < em128 {
            p *= ep128;
            expnt -= E128;
        }
    }
    if expnt != 0 {
        p = ldexp(p, expnt);
    }
    p.clamp(0.0, 1.0)
}

fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (ip1div2, ip1mod2) = ((i + 1) / 2, (i + 1) % 2);
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// Python-style slice bounds of `v[start:end]` (negative start counts from
/// the end, both clipped to the length).
fn py_slice(v: &[f64], start: i64, end: i64) -> &[f64] {
    let len = v.len() as i64;
    let norm = |i: i64| if i < 0 { (i + len).max(0) } else { i.min(len) };
    let (s, e) = (norm(start), norm(end));
    if s >= e {
        &[]
    } else {
        &v[s as usize..e as usize]
    }
}

/// Pr(D_n <= d) by Pomeranz's recursion (scipy `_kolmogn_Pomeranz`).
fn kolmogn_pomeranz_cdf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let n = n as i64;
    let t = nf * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gpower = vec![1.0; npwrs];
    let mut twogpower = vec![1.0; npwrs];
    let mut onem2gpower = vec![1.0; npwrs];
    let (g_over_n, two_g_over_n, one_minus_two_g_over_n) = (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        gpower[m] = gpower[m - 1] * g_over_n / m as f64;
        twogpower[m] = twogpower[m - 1] * two_g_over_n / m as f64;
        onem2gpower[m] = onem2gpower[m - 1] * one_minus_two_g_over_n / m as f64;
    }
    let ep128 = pow2(E128 as i32);
    let em128 = pow2(-(E128 as i32));
    let mut v0 = vec![0.0; npwrs];
    let mut v1 = vec![0.0; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s) = (0i64, 0i64);
    let mut expnt = 0i64;
    let (mut j1, mut _j2) = pomeranz_j1j2(0, n, ll, ceilf, roundf);
    for i in 1..(2 * n + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.iter_mut().for_each(|v| *v = 0.0);
        let (nj1, nj2) = pomeranz_j1j2(i, n, ll, ceilf, roundf);
        (j1, _j2) = (nj1, nj2);
        let pwrs = if i == 1 || i == 2 * n + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = nj2 - k1 + 1;
        if ln2 > 0 {
            let a = py_slice(&v0, k1 - v0s, k1 - v0s + ln2);
            let b = py_slice(pwrs, 0, ln2);
            let conv = convolve(a, b);
            let conv_start = nj1 - k1;
            let conv_len = nj2 - nj1 + 1;
            let src = py_slice(&conv, conv_start, conv_start + conv_len);
            let len = src.len().min(v1.len());
            v1[..len].copy_from_slice(&src[..len]);
            let max = v1.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < max && max < em128 {
                v1.iter_mut().for_each(|v| *v *= ep128);
                expnt -= E128;
            }
            v1s = v0s + nj1 - k1;
        }
    }
    let Some(&start) = v1.get((n - v1s) as usize) else {
        return f64::NAN;
    };
    let mut ans = start;
    for m in 1..=n {
        if ans.abs() > ep128 {
            ans *= em128;
            expnt += E128;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans = ldexp(ans, expnt);
    }
    ans.clamp(0.0, 1.0)
}

/// Full discrete convolution (numpy `convolve(a, b, "full")`).
fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0.0; a.len() + b.len() - 1];
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            out[i + j] += x * y;
        }
    }
    out
}

/// Pr(D_n <= x) by the Pelz-Good asymptotic expansion (scipy
/// `_kolmogn_PelzGood`).
fn kolmogn_pelz_good_cdf(n: u64, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let pi2 = PI.powf(2.0);
    let pi4 = PI.powf(4.0);
    let pi6 = PI.powf(6.0);
    let sqrt2pi = (2.0 * PI).sqrt();
    let z = nf.sqrt() * x;
    let (zsquared, zthree, zfour, zsix) = (z.powf(2.0), z.powf(3.0), z.powf(4.0), z.powf(6.0));
    let qlog = -pi2 / 8.0 / zsquared;
    if qlog < -708.0 {
        return 0.0;
    }
    let q = qlog.exp();
    let k1a = -zsquared;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * zsix + 2.0 * zfour;
    let k2b = (2.0 * zfour - 5.0 * zsquared) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * zsquared) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * zsquared) / 64.0;
    let k3c = pi4 * (-60.0 * zsquared + 212.0 * zfour) / 16.0;
    let k3b = pi2 * (135.0 * zfour - 96.0 * zsix) / 4.0;
    let k3a = -30.0 * zsix - 90.0 * z.powf(8.0);
    let mut kk = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for k in (1..=maxk).rev() {
        let m = (2 * k - 1) as f64;
        let (msq, mfour, msix) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf((8 * k) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * msq,
            k2a + k2b * msq + k2c * mfour,
            k3a + k3b * msq + k3c * mfour + k3d * msix,
        ];
        for (v, c) in kk.iter_mut().zip(coeffs) {
            *v = *v * qpower + c;
        }
    }
    let div = [z, 6.0 * zfour, 72.0 * z.powf(7.0), 6480.0 * z.powf(10.0)];
    for (v, dv) in kk.iter_mut().zip(div) {
        *v = *v * q * sqrt2pi / dv;
    }
    let q = (-pi2 / 2.0 / zsquared).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for k in (1..=maxk).rev() {
        let ksq = (k * k) as f64;
        let qp = q.powf(ksq);
        let kspi = PI * k as f64;
        k2extra += ksq * qp;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksq * qp;
    }
    kk[2] += k2extra * pi2 * sqrt2pi / (-36.0 * zthree);
    kk[3] += k3extra * pi2 * sqrt2pi / (216.0 * zsix);
    for (i, v) in kk.iter_mut().enumerate() {
        *v /= nf.powf(i as f64 / 2.0);
    }
    kk.iter().sum()
}

/// Survival function of the one-sided KS statistic, Pr(D_n^+ >= x)
/// (`scipy.special.smirnov(n, x)`): the Birnbaum-Tingey sum
/// x · Σ_{v < n(1−x)} C(n, v) (x + v/n)^(v−1) (1 − x − v/n)^(n−v),
/// whose terms are all positive; each term is evaluated in log space. n·x is
/// split into floor and fraction with an exact residual (scipy does this in
/// double-double) so that x + v/n and 1 − x − v/n are accurate.
fn smirnov_sf(n: u64, x: f64) -> f64 {
    if !(0.0..=1.0).contains(&x) {
        return f64::NAN;
    }
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    let nx = nf * x;
    let err = nf.mul_add(x, -nx);
    let mut nxfl = nx.floor();
    let mut alpha = (nx - nxfl) + err;
    if alpha < 0.0 {
        nxfl -= 1.0;
        alpha += 1.0;
    }
    if alpha >= 1.0 {
        nxfl += 1.0;
        alpha -= 1.0;
    }
    if nxfl == 0.0 || (nxfl == 1.0 && alpha == 0.0) {
        let cdf = x * (1.0 + x).powf(nf - 1.0);
        return 1.0 - cdf;
    }
    // MINLOG of cephes: below it exp() underflows.
    if -2.0 * nf * x * x < -7.083_964_185_322_641e2 {
        return 0.0;
    }
    if nxfl >= nf - 1.0 {
        return (1.0 - x).powf(nf);
    }
    if n > 1_000_000 {
        let logp = -(6.0 * nf * x + 1.0).powi(2) / 18.0 / nf;
        return if logp < -std::f64::consts::LN_2 {
            logp.exp()
        } else {
            1.0 + logp.exp_m1()
        };
    }
    let nxfl = nxfl as u64;
    // For large n the log of a term is a small difference of numbers ~n, so
    // it is assembled from error-free transformations (two_sum / two_prod)
    // and ln C(n, v) is accumulated with compensation; what remains is the
    // rounding of the two logarithms (3e-14 relative measured at n = 2e5).
    let n_terms = n - nxfl; // v with 1 − x − v/n > 0
    let ln_x = x.ln();
    let mut ln_c = (0.0f64, 0.0f64); // ln C(n, v) as hi + lo
    let (mut sum, mut comp) = (0.0f64, 0.0f64);
    let mut past_peak = false;
    let mut last = 0.0f64;
    for v in 0..n_terms {
        if v > 0 {
            let (s, e) = two_sum(ln_c.0, ((n - v + 1) as f64 / v as f64).ln());
            ln_c = (s, ln_c.1 + e);
        }
        // r1 = x + v/n and r2 = 1 − x − v/n, each from its exact integer part
        // and alpha; ln r2 through log1p(−r1) while r1 is small.
        let r1 = ((nxfl + v) as f64 + alpha) / nf;
        let t2 = (n - nxfl - v) as f64 - alpha;
        let ln_r2 = if r1 < 0.5 { (-r1).ln_1p() } else { (t2 / nf).ln() };
        if !(r1 > 0.0 && ln_r2.is_finite()) {
            continue; // a zero term (cannot happen for v in range; defensive)
        }
        let a = two_prod(v as f64 - 1.0, r1.ln());
        let b = two_prod((n - v) as f64, ln_r2);
        let (mut hi, mut lo) = (0.0f64, 0.0f64);
        for part in [ln_c.0, a.0, b.0, ln_x, ln_c.1, a.1, b.1] {
            let (s, e) = two_sum(hi, part);
            hi = s;
            lo += e;
        }
        let term = (hi + lo).exp();
        let s = sum + term;
        comp += if sum.abs() >= term.abs() {
            (sum - s) + term
        } else {
            (term - s) + sum
        };
        sum = s;
        if term < last {
            past_peak = true;
        }
        last = term;
        if past_peak && term * ((n_terms - v) as f64) < 1e-18 * sum {
            break;
        }
    }
    sum + comp
}

/// Error-free sum: a + b = s + e exactly.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// Error-free product: a · b = p + e exactly (fused multiply-add).
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

// --------------------------------------------------------------- ROC-AUC

/// ROC-AUC of scores for a positive and a negative class: the probability
/// that a random positive scores higher than a random negative, ties counting
/// 1/2 — `sklearn.metrics.roc_auc_score` with label 1 for `positives`, equal
/// to Mann-Whitney U / (n_pos · n_neg). Computed from exact integer counts and
/// one division.
///
/// Errors: an empty class, or a NaN score (±∞ are ordinary scores).
pub fn roc_auc(positives: &[f64], negatives: &[f64]) -> Result<f64> {
    non_empty("roc_auc positives", positives)?;
    non_empty("roc_auc negatives", negatives)?;
    no_nan("roc_auc positives", positives)?;
    no_nan("roc_auc negatives", negatives)?;
    let mut neg = negatives.to_vec();
    neg.sort_by(f64::total_cmp);
    let mut twice_u: u128 = 0;
    for &p in positives {
        let less = neg.partition_point(|n| *n < p) as u128;
        let less_eq = neg.partition_point(|n| *n <= p) as u128;
        twice_u += 2 * less + (less_eq - less);
    }
    let denom = 2 * positives.len() as u128 * neg.len() as u128;
    Ok(twice_u as f64 / denom as f64)
}

// ------------------------------------------- probabilities and truth ratio

/// p(a|q) = exp(−mean NLL) of an answer from its per-token negative
/// log-likelihoods (teacher-forced), as grin.md and TOFU define it.
pub fn answer_probability(token_nll: &[f64]) -> Result<f64> {
    non_empty("answer_probability", token_nll)?;
    no_nan("answer_probability", token_nll)?;
    Ok((-mean(token_nll)).exp())
}

/// Truth ratio R = mean_i p(perturbed_i|q) / p(paraphrased|q), grin.md's
/// definition, with each p = exp(−mean NLL) of the answer (see
/// [`answer_probability`]). R < 1 means the model prefers the (paraphrased)
/// true answer over the perturbed false ones.
///
/// Difference from open-unlearning: its `truth_ratio` averages the perturbed
/// answers' mean NLLs before exponentiating (a geometric mean of the
/// probabilities) and adds 1e-10 to the denominator; grin.md specifies the
/// arithmetic mean of probabilities and no epsilon.
///
/// Errors: no perturbed answers, a probability that is negative or not
/// finite, or `p_paraphrased <= 0`.
pub fn truth_ratio(p_perturbed: &[f64], p_paraphrased: f64) -> Result<f64> {
    non_empty("truth_ratio p_perturbed", p_perturbed)?;
    all_finite("truth_ratio p_perturbed", p_perturbed)?;
    if let Some(i) = p_perturbed.iter().position(|p| *p < 0.0) {
        return Err(MetricsError::OutOfDomain {
            what: "truth_ratio p_perturbed",
            message: format!("negative probability at index {i}"),
        });
    }
    if !(p_paraphrased.is_finite() && p_paraphrased > 0.0) {
        return Err(MetricsError::OutOfDomain {
            what: "truth_ratio p_paraphrased",
            message: "must be finite and > 0".into(),
        });
    }
    Ok(mean(p_perturbed) / p_paraphrased)
}

/// Per-item truth-ratio score on a forget set: min(R, 1/R) — 1 when the model
/// cannot tell true from false answers (the goal after unlearning), near 0
/// when it strongly prefers either. R = 0 or ∞ give 0. TOFU /
/// open-unlearning `closer_to_1_better` (without its 1e-10 epsilon).
pub fn forget_truth_score(r: f64) -> f64 {
    r.min(1.0 / r)
}

/// Per-item truth-ratio score on a retain set: max(0, 1 − R) — high when the
/// model prefers the true answer. TOFU / open-unlearning `true_better`.
pub fn retain_truth_score(r: f64) -> f64 {
    (1.0 - r).max(0.0)
}

/// Harmonic mean n / Σ 1/x_i of non-negative values, 0 if any value is 0
/// (TOFU's model utility aggregates this way; `scipy.stats.hmean`).
///
/// Errors: empty input, a negative or non-finite value.
pub fn harmonic_mean(values: &[f64]) -> Result<f64> {
    non_empty("harmonic_mean", values)?;
    all_finite("harmonic_mean", values)?;
    if let Some(i) = values.iter().position(|v| *v < 0.0) {
        return Err(MetricsError::OutOfDomain {
            what: "harmonic_mean",
            message: format!("negative value at index {i}"),
        });
    }
    if values.contains(&0.0) {
        return Ok(0.0);
    }
    Ok(values.len() as f64 / values.iter().map(|v| 1.0 / v).sum::<f64>())
}

/// TOFU forget quality: the p-value of the two-sided two-sample KS test
/// ([`ks_2samp`], scipy `method="auto"`) between the per-item forget truth
/// ratios of the unlearned model and of the oracle (a model never trained on
/// the forget set). High (close to 1) = indistinguishable from the oracle.
pub fn forget_quality(unlearned_truth_ratios: &[f64], oracle_truth_ratios: &[f64]) -> Result<f64> {
    Ok(ks_2samp(unlearned_truth_ratios, oracle_truth_ratios)?.pvalue)
}

// ------------------------------------------------------------ memorisation

fn aligned_ids(what: &'static str, argmax: &[u32], labels: &[u32]) -> Result<()> {
    same_len(what, argmax.len(), labels.len())?;
    if labels.is_empty() {
        return Err(MetricsError::Empty { what });
    }
    Ok(())
}

/// Exact memorisation: the share of answer tokens whose teacher-forced argmax
/// equals the label (`argmax[i]` is the model's prediction for `labels[i]`).
/// open-unlearning `exact_memorization`.
///
/// Errors: different lengths, or no tokens.
pub fn exact_memorization(argmax: &[u32], labels: &[u32]) -> Result<f64> {
    aligned_ids("exact_memorization", argmax, labels)?;
    let hits = argmax.iter().zip(labels).filter(|(a, l)| a == l).count();
    Ok(hits as f64 / labels.len() as f64)
}

/// Extraction strength 1 − k/|y|, where k is the smallest prefix length in
/// 0..=|y| such that `argmax[i] == labels[i]` for every i >= k (given the
/// true prefix, the teacher-forced argmax reproduces the rest of y). A perfect
/// match gives 1; a wrong last token gives 0.
///
/// Difference from open-unlearning: its loop stops at k = |y| − 1, so a wrong
/// last token scores 1/|y| there; here it scores 0, as the definition says.
///
/// Errors: different lengths, or no tokens.
pub fn extraction_strength(argmax: &[u32], labels: &[u32]) -> Result<f64> {
    aligned_ids("extraction_strength", argmax, labels)?;
    let k = argmax
        .iter()
        .zip(labels)
        .rposition(|(a, l)| a != l)
        .map_or(0, |i| i + 1);
    Ok(1.0 - k as f64 / labels.len() as f64)
}

// ------------------------------------------------- membership inference

/// LOSS attack (Yeom et al. 2018): the mean per-token log-probability of the
/// target tokens, i.e. −(mean NLL). Higher = more likely a member (see the
/// module docs for the sign convention).
///
/// Errors: no tokens, or a NaN.
pub fn loss_score(token_logprobs: &[f64]) -> Result<f64> {
    non_empty("loss_score", token_logprobs)?;
    no_nan("loss_score", token_logprobs)?;
    Ok(mean(token_logprobs))
}

/// Length in bytes of the zlib stream (RFC 1950, default level 6) of the
/// UTF-8 text, the "zlib entropy" of Carlini et al. 2021. Python's
/// `len(zlib.compress(text.encode("utf-8")))` uses the C zlib, whose output
/// can differ from this pure-Rust encoder (miniz_oxide) by a few bytes on
/// some inputs.
pub fn zlib_compressed_len(text: &str) -> usize {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    // Writing to a Vec cannot fail.
    if enc.write_all(text.as_bytes()).is_err() {
        return text.len();
    }
    enc.finish().map_or(text.len(), |v| v.len())
}

/// zlib attack (Carlini et al. 2021, as open-unlearning's `ZLIBAttack`):
/// the mean per-token log-probability divided by the zlib-compressed length
/// of the text ([`zlib_compressed_len`]): −(mean NLL) / zlib_len. open-unlearning
/// returns mean NLL / zlib_len; this is its negation, per the module's sign
/// convention (same AUC).
pub fn zlib_score(token_logprobs: &[f64], text: &str) -> Result<f64> {
    Ok(loss_score(token_logprobs)? / zlib_compressed_len(text) as f64)
}

fn check_k(k: f64) -> Result<()> {
    if !(k > 0.0 && k <= 1.0) {
        return Err(MetricsError::OutOfDomain {
            what: "min_k k",
            message: "must be in (0, 1]".into(),
        });
    }
    Ok(())
}

fn mean_of_lowest(values: &[f64], k: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let num_k = ((values.len() as f64 * k) as usize).max(1);
    mean(&v[..num_k])
}

/// Min-K% Prob (Shi et al. 2024): the mean of the lowest ⌊k·n⌋ (at least one)
/// per-token log-probabilities of the target tokens. grin.md uses k = 0.4.
/// Higher = more likely a member; open-unlearning's `MinKProbAttack` returns
/// the negation (same AUC).
///
/// Errors: no tokens, a NaN, or k outside (0, 1].
pub fn min_k(token_logprobs: &[f64], k: f64) -> Result<f64> {
    non_empty("min_k", token_logprobs)?;
    no_nan("min_k", token_logprobs)?;
    check_k(k)?;
    Ok(mean_of_lowest(token_logprobs, k))
}

/// Lower bound applied to the variance in [`min_k_plus_plus`] (as
/// open-unlearning does), so a (numerically) one-hot distribution does not
/// divide by zero.
pub const MIN_K_PP_MIN_VARIANCE: f64 = 1e-6;

/// Min-K%++ (Zhang et al. 2024): per position t,
/// z_t = (log p(x_t) − μ_t) / sqrt(σ²_t), where μ_t and σ²_t are the mean and
/// variance of log p(·) under the model's own next-token distribution at t
/// (E_{z~p}[log p(z)] and Var_{z~p}[log p(z)]; see [`logprob_moments`]); the
/// score is the mean of the lowest ⌊k·n⌋ (at least one) z_t. σ²_t is clamped
/// below at [`MIN_K_PP_MIN_VARIANCE`]. Higher = more likely a member;
/// open-unlearning's `MinKPlusPlusAttack` returns the negation.
///
/// Errors: no tokens, different lengths, a NaN, a negative variance, or k
/// outside (0, 1].
pub fn min_k_plus_plus(token_logprobs: &[f64], mu: &[f64], sigma2: &[f64], k: f64) -> Result<f64> {
    non_empty("min_k_plus_plus", token_logprobs)?;
    same_len("min_k_plus_plus mu", token_logprobs.len(), mu.len())?;
    same_len("min_k_plus_plus sigma2", token_logprobs.len(), sigma2.len())?;
    no_nan("min_k_plus_plus logprobs", token_logprobs)?;
    no_nan("min_k_plus_plus mu", mu)?;
    no_nan("min_k_plus_plus sigma2", sigma2)?;
    check_k(k)?;
    if let Some(i) = sigma2.iter().position(|s| *s < 0.0) {
        return Err(MetricsError::OutOfDomain {
            what: "min_k_plus_plus sigma2",
            message: format!("negative variance at index {i}"),
        });
    }
    let z: Vec<f64> = token_logprobs
        .iter()
        .zip(mu)
        .zip(sigma2)
        .map(|((lp, m), s2)| (lp - m) / s2.max(MIN_K_PP_MIN_VARIANCE).sqrt())
        .collect();
    Ok(mean_of_lowest(&z, k))
}

/// Mean and variance of log p(z) for z drawn from the distribution whose
/// log-probabilities are `log_probs` (one position's full vocabulary):
/// μ = Σ p·log p, σ² = Σ p·(log p)² − μ², the inputs of [`min_k_plus_plus`].
/// Entries with p = 0 (log p = −∞) contribute nothing.
pub fn logprob_moments(log_probs: &[f64]) -> (f64, f64) {
    let (mut mu, mut m2) = (0.0, 0.0);
    for &lp in log_probs {
        let p = lp.exp();
        if p > 0.0 {
            mu += p * lp;
            m2 += p * lp * lp;
        }
    }
    (mu, m2 - mu * mu)
}

/// ROC-AUC of a membership-inference attack: members (the forget set) against
/// non-members (the holdout set), scores oriented higher = member; equals
/// [`roc_auc`]`(member_scores, nonmember_scores)`. 1 = members fully
/// recognised, 0.5 = indistinguishable.
pub fn mia_auc(member_scores: &[f64], nonmember_scores: &[f64]) -> Result<f64> {
    roc_auc(member_scores, nonmember_scores)
}

/// MUSE's privacy leakage, in percent: (AUC_unlearned − AUC_ref) / AUC_ref ·
/// 100, with AUC_ref the oracle's (retrained model's) MIA AUC when given and
/// 0.5 otherwise. Near 0 is the goal; with this module's AUC orientation a
/// positive value means the forget set still looks more like members than it
/// does to the reference (under-unlearning), a negative value that it looks
/// less like members (over-unlearning). Papers that orient the AUC the other
/// way report the opposite sign.
///
/// Errors: a non-finite AUC, or a reference AUC <= 0.
pub fn privleak(auc_unlearned: f64, auc_reference: Option<f64>) -> Result<f64> {
    let reference = auc_reference.unwrap_or(0.5);
    if !auc_unlearned.is_finite() {
        return Err(MetricsError::NotFinite {
            what: "privleak auc_unlearned",
            index: 0,
        });
    }
    if !(reference.is_finite() && reference > 0.0) {
        return Err(MetricsError::OutOfDomain {
            what: "privleak auc_reference",
            message: "must be finite and > 0".into(),
        });
    }
    Ok((auc_unlearned - reference) / reference * 100.0)
}
