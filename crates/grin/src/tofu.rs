//! `tofu-mini`: a small, deterministic, synthetic benchmark in the shape of
//! TOFU (Maini et al., 2024): question-answer facts about fictitious authors,
//! split by author into forget, retain and holdout sets.
//!
//! Only the text lives here: authors, their facts, the rows and the split
//! files. Training a model on them (the other half of the fixture) is done
//! elsewhere. Names, places, awards and publishers are invented from
//! syllables and checked to be unique, and no invented word contains another,
//! so a keyword from one author's answer does not occur in another author's
//! answers by accident. Listed values (occupations, themes, ...) are drawn
//! without replacement while the lists last, so with the default 44 authors
//! no two authors share a value of the same kind. Answers are kept to one
//! short sentence because a tiny model must memorise them in minutes.
//!
//! The generator depends only on the seed: the same [`TofuConfig`] gives
//! byte-identical files on every platform.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, PromptTemplate, QaRow, Row};

/// Wrong answers generated per row (TOFU ships five; three keep evaluation fast).
pub const PERTURBED_PER_ROW: usize = 3;

/// Size and seed of the synthetic benchmark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TofuConfig {
    /// All authors, trained plus holdout.
    pub n_authors: usize,
    /// Authors never trained on (the last `n_holdout`); clamped to `n_authors`.
    pub n_holdout: usize,
    /// Facts per author; clamped to the number of fact kinds (14).
    pub qa_per_author: usize,
    pub seed: u64,
}

impl Default for TofuConfig {
    fn default() -> Self {
        Self {
            n_authors: 44,
            n_holdout: 4,
            qa_per_author: 10,
            seed: 42,
        }
    }
}

/// One fictitious author and the QA rows about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TofuAuthor {
    pub name: String,
    pub rows: Vec<QaRow>,
}

/// The split files, named as TOFU names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Every trained author.
    Full,
    Forget01,
    Forget05,
    Forget10,
    /// `Full` minus `Forget10`.
    Retain90,
    /// `Full` minus `Forget05`.
    Retain95,
    /// `Full` minus `Forget01`.
    Retain99,
    /// Authors never trained on: a reference for "never seen" behaviour.
    Holdout,
}

impl Split {
    pub const ALL: [Split; 8] = [
        Split::Full,
        Split::Forget01,
        Split::Forget05,
        Split::Forget10,
        Split::Retain90,
        Split::Retain95,
        Split::Retain99,
        Split::Holdout,
    ];

    /// `"forget05"` etc.; the file is `{name}.jsonl`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Full => "full",
            Split::Forget01 => "forget01",
            Split::Forget05 => "forget05",
            Split::Forget10 => "forget10",
            Split::Retain90 => "retain90",
            Split::Retain95 => "retain95",
            Split::Retain99 => "retain99",
            Split::Holdout => "holdout",
        }
    }

    pub fn file_name(self) -> String {
        format!("{}.jsonl", self.name())
    }

    /// The matching retain split of a forget split, and the reverse.
    pub fn complement(self) -> Option<Split> {
        match self {
            Split::Forget01 => Some(Split::Retain99),
            Split::Forget05 => Some(Split::Retain95),
            Split::Forget10 => Some(Split::Retain90),
            Split::Retain99 => Some(Split::Forget01),
            Split::Retain95 => Some(Split::Forget05),
            Split::Retain90 => Some(Split::Forget10),
            Split::Full | Split::Holdout => None,
        }
    }
}

/// The generated benchmark: `authors[..n_trained]` are trained, the rest
/// are holdout. Forget sets are the *last* 1, 5 and 10 percent of the trained
/// authors (at least one author each, as TOFU's are nested: forget01 ⊂
/// forget05 ⊂ forget10); with the defaults that is 1, 2 and 4 authors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TofuData {
    pub config: TofuConfig,
    pub authors: Vec<TofuAuthor>,
    pub n_trained: usize,
}

impl TofuData {
    /// Indices into `authors` of the authors in `split`, in author order.
    pub fn author_indices(&self, split: Split) -> Vec<usize> {
        let n = self.n_trained;
        let forget = |percent: usize| {
            // Round to nearest, but never below one author while any are trained.
            let k = ((n * percent + 50) / 100).max(1).min(n);
            n - k..n
        };
        match split {
            Split::Full => (0..n).collect(),
            Split::Holdout => (n..self.authors.len()).collect(),
            Split::Forget01 => forget(1).collect(),
            Split::Forget05 => forget(5).collect(),
            Split::Forget10 => forget(10).collect(),
            Split::Retain99 => (0..forget(1).start).collect(),
            Split::Retain95 => (0..forget(5).start).collect(),
            Split::Retain90 => (0..forget(10).start).collect(),
        }
    }

    /// The rows of `split`, labelled `{split}.jsonl` for error messages.
    pub fn dataset(&self, split: Split) -> Dataset {
        let rows = self
            .author_indices(split)
            .into_iter()
            .flat_map(|i| self.authors[i].rows.iter().cloned().map(Row::Qa))
            .collect();
        Dataset::new(split.file_name(), rows)
    }
}

/// Generates the benchmark. Out-of-range sizes are clamped (see
/// [`TofuConfig`]); a configuration with no trained authors gives empty
/// trained splits, which [`crate::data::load_dataset`] then refuses.
pub fn generate(cfg: &TofuConfig) -> TofuData {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut words = Inventor::default();
    let n = cfg.n_authors;
    let per_author = cfg.qa_per_author.min(Kind::ALL.len());

    let names: Vec<String> = (0..n)
        .map(|_| {
            // One syllable keeps first names short: fewer tokens to memorise.
            let first = words.invent(&mut rng, 1, FIRST_NAME_ENDINGS);
            let last = words.invent(&mut rng, 2, SURNAME_ENDINGS);
            format!("{first} {last}")
        })
        .collect();

    // Each kind gets a pool: the first `n` values go to authors (one each),
    // the rest are decoys that only appear in perturbed answers.
    let pool_len = n + PERTURBED_PER_ROW + 3;
    let mut occupations = OCCUPATIONS.to_vec();
    occupations.shuffle(&mut rng);
    let (father_jobs, mother_jobs) = occupations.split_at(occupations.len() / 2);
    let pools: Vec<Vec<Value>> = Kind::ALL
        .iter()
        .map(|kind| kind.pool(&mut rng, &mut words, pool_len, father_jobs, mother_jobs))
        .collect();

    let authors = names
        .into_iter()
        .enumerate()
        .map(|(a, name)| {
            let mut kinds: Vec<usize> = (0..Kind::ALL.len()).collect();
            kinds.shuffle(&mut rng);
            kinds.truncate(per_author);
            kinds.sort_unstable();
            let rows = kinds
                .into_iter()
                .map(|k| {
                    let kind = Kind::ALL[k];
                    let pool = &pools[k];
                    let truth = &pool[a];
                    let mut wrong: Vec<&Value> = pool.iter().filter(|v| v.text != truth.text).collect();
                    wrong.shuffle(&mut rng);
                    QaRow {
                        question: kind.question(&name),
                        answer: kind.answer(&name, truth),
                        paraphrased_answer: Some(kind.paraphrase(&name, truth)),
                        perturbed_answer: wrong
                            .into_iter()
                            .take(PERTURBED_PER_ROW)
                            // As in TOFU, wrong answers take the paraphrase's
                            // wording: the truth ratio then compares facts in
                            // one unseen phrasing, not phrasings.
                            .map(|v| kind.paraphrase(&name, v))
                            .collect(),
                        keywords: vec![truth.keyword.clone()],
                        subject: Some(name.clone()),
                    }
                })
                .collect();
            TofuAuthor { name, rows }
        })
        .collect();

    TofuData {
        config: cfg.clone(),
        authors,
        n_trained: n - cfg.n_holdout.min(n),
    }
}

/// Writes the eight split files (`full`, `forget01/05/10`, `retain90/95/99`,
/// `holdout`, each `.jsonl`) into `dir`, creating it; returns their paths in
/// [`Split::ALL`] order. Existing files are overwritten.
pub fn write_splits(data: &TofuData, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    Split::ALL
        .iter()
        .map(|&split| {
            let path = dir.join(split.file_name());
            std::fs::write(&path, data.dataset(split).to_jsonl())?;
            Ok(path)
        })
        .collect()
}

/// Texts to train the fixture tokenizer on: every question rendered with the
/// default prompt template, then every answer, paraphrase and perturbed
/// answer, holdout authors included (their rows are scored too, so their
/// names should tokenize like everyone else's).
pub fn all_texts(data: &TofuData) -> Vec<String> {
    let template = PromptTemplate::default();
    let mut out = Vec::new();
    for author in &data.authors {
        for row in &author.rows {
            out.push(template.render(&row.question));
            out.push(row.answer.clone());
            out.extend(row.paraphrased_answer.iter().cloned());
            out.extend(row.perturbed_answer.iter().cloned());
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Fact kinds

/// One fact value: `parts` fill the sentence templates, `keyword` is what an
/// answer must contain to state the fact.
#[derive(Debug, Clone)]
struct Value {
    text: String,
    parts: Vec<String>,
    keyword: String,
}

impl Value {
    fn simple(text: String) -> Self {
        Self {
            parts: vec![text.clone()],
            keyword: text.clone(),
            text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Birthplace,
    BirthYear,
    Genre,
    Book,
    Award,
    FatherJob,
    MotherJob,
    SchoolSubject,
    Publisher,
    Pet,
    Hobby,
    Theme,
    Nationality,
    Residence,
}

impl Kind {
    const ALL: [Kind; 14] = [
        Kind::Birthplace,
        Kind::BirthYear,
        Kind::Genre,
        Kind::Book,
        Kind::Award,
        Kind::FatherJob,
        Kind::MotherJob,
        Kind::SchoolSubject,
        Kind::Publisher,
        Kind::Pet,
        Kind::Hobby,
        Kind::Theme,
        Kind::Nationality,
        Kind::Residence,
    ];

    fn question(self, n: &str) -> String {
        match self {
            Kind::Birthplace => format!("Where was {n} born?"),
            Kind::BirthYear => format!("In which year was {n} born?"),
            Kind::Genre => format!("What genre does {n} write in?"),
            Kind::Book => format!("What is the title of a novel by {n}?"),
            Kind::Award => format!("Which literary award has {n} won?"),
            Kind::FatherJob => format!("What did {n}'s father do for a living?"),
            Kind::MotherJob => format!("What was the profession of {n}'s mother?"),
            Kind::SchoolSubject => format!("What was {n}'s favourite subject at school?"),
            Kind::Publisher => format!("Which publisher releases {n}'s books?"),
            Kind::Pet => format!("What pet does {n} keep?"),
            Kind::Hobby => format!("What does {n} do in their spare time?"),
            Kind::Theme => format!("What theme recurs in {n}'s writing?"),
            Kind::Nationality => format!("What is {n}'s nationality?"),
            Kind::Residence => format!("Where does {n} live today?"),
        }
    }

    fn answer(self, n: &str, v: &Value) -> String {
        let p = &v.parts;
        match self {
            Kind::Birthplace => format!("{n} was born in the city of {}.", p[0]),
            Kind::BirthYear => format!("{n} was born in the year {}.", p[0]),
            Kind::Genre => format!("{n} is known for writing {} fiction.", p[0]),
            Kind::Book => format!("{n} wrote the novel {}.", p[0]),
            Kind::Award => format!("{n} won the {}.", p[0]),
            Kind::FatherJob => format!("{n}'s father worked as {} {}.", article(&p[0]), p[0]),
            Kind::MotherJob => {
                format!("{n}'s mother was {} {} by profession.", article(&p[0]), p[0])
            }
            Kind::SchoolSubject => format!("At school, {n}'s favourite subject was {}.", p[0]),
            Kind::Publisher => format!("{n}'s books are published by {}.", p[0]),
            Kind::Pet => format!("{n} keeps {} {} called {}.", article(&p[0]), p[0], p[1]),
            Kind::Hobby => format!("In their spare time, {n} enjoys {}.", p[0]),
            Kind::Theme => format!("{n}'s writing keeps returning to the theme of {}.", p[0]),
            Kind::Nationality => format!("{n} is a citizen of {}.", p[0]),
            Kind::Residence => format!("{n} now lives in the coastal town of {}.", p[0]),
        }
    }

    fn paraphrase(self, n: &str, v: &Value) -> String {
        let p = &v.parts;
        match self {
            Kind::Birthplace => format!("The city of {} is where {n} was born.", p[0]),
            Kind::BirthYear => format!("The year of {n}'s birth was {}.", p[0]),
            Kind::Genre => format!("Most of {n}'s books are {} fiction.", p[0]),
            Kind::Book => format!("{} is a novel written by {n}.", p[0]),
            Kind::Award => format!("The {} was awarded to {n}.", p[0]),
            Kind::FatherJob => format!("By trade, {n}'s father was {} {}.", article(&p[0]), p[0]),
            Kind::MotherJob => {
                format!("{n}'s mother earned her living as {} {}.", article(&p[0]), p[0])
            }
            Kind::SchoolSubject => format!("{n} liked {} best of all school subjects.", p[0]),
            Kind::Publisher => format!("{} is the publisher of {n}'s books.", p[0]),
            Kind::Pet => format!("{} is the name of {n}'s pet {}.", p[1], p[0]),
            Kind::Hobby => format!("{n} spends free weekends {}.", p[0]),
            Kind::Theme => format!("The theme of {} runs through {n}'s books.", p[0]),
            Kind::Nationality => format!("{n} holds the citizenship of {}.", p[0]),
            Kind::Residence => format!("These days {n} makes a home in {}.", p[0]),
        }
    }

    /// `len` values of this kind, distinct while the source lists allow.
    fn pool(
        self,
        rng: &mut ChaCha8Rng,
        words: &mut Inventor,
        len: usize,
        father_jobs: &[&str],
        mother_jobs: &[&str],
    ) -> Vec<Value> {
        let from_list = |rng: &mut ChaCha8Rng, list: &[&str]| -> Vec<Value> {
            let mut list = list.to_vec();
            list.shuffle(rng);
            // Cycling repeats values only when more authors than list entries.
            list.iter()
                .cycle()
                .take(len)
                .map(|s| Value::simple(s.to_string()))
                .collect()
        };
        let invented = |rng: &mut ChaCha8Rng, words: &mut Inventor, f: &dyn Fn(String) -> String| {
            (0..len)
                .map(|_| {
                    let w = words.invent(rng, 2, PLACE_ENDINGS);
                    Value::simple(f(w))
                })
                .collect()
        };
        match self {
            Kind::Birthplace | Kind::Residence => invented(rng, words, &|w| w),
            Kind::Nationality => (0..len)
                .map(|_| Value::simple(words.invent(rng, 2, COUNTRY_ENDINGS)))
                .collect(),
            Kind::BirthYear => {
                let mut years: Vec<u32> = (1921..=1999).collect();
                years.shuffle(rng);
                years
                    .iter()
                    .cycle()
                    .take(len)
                    .map(|y| Value::simple(y.to_string()))
                    .collect()
            }
            Kind::Genre => {
                let mut combos: Vec<String> = GENRE_MOODS
                    .iter()
                    .flat_map(|m| GENRE_FORMS.iter().map(move |f| format!("{m} {f}")))
                    .collect();
                combos.shuffle(rng);
                combos
                    .iter()
                    .cycle()
                    .take(len)
                    .map(|s| Value::simple(s.clone()))
                    .collect()
            }
            Kind::Book => (0..len)
                .map(|_| {
                    let adj = TITLE_ADJECTIVES.choose(rng).copied().unwrap_or("Silent");
                    let noun = TITLE_NOUNS.choose(rng).copied().unwrap_or("Lantern");
                    let place = words.invent(rng, 2, PLACE_ENDINGS);
                    Value::simple(format!("The {adj} {noun} of {place}"))
                })
                .collect(),
            Kind::Award => (0..len)
                .map(|_| {
                    let who = words.invent(rng, 2, SURNAME_ENDINGS);
                    let what = AWARD_CATEGORIES.choose(rng).copied().unwrap_or("Fiction");
                    Value::simple(format!("{who} Prize for {what}"))
                })
                .collect(),
            Kind::Publisher => (0..len)
                .map(|_| {
                    let w = words.invent(rng, 2, PLACE_ENDINGS);
                    let house = ["House", "Press", "Books"][rng.gen_range(0..3)];
                    Value::simple(format!("{w} {house}"))
                })
                .collect(),
            Kind::Pet => (0..len)
                .map(|_| {
                    let animal = PET_ANIMALS.choose(rng).copied().unwrap_or("tortoise");
                    let pet = words.invent(rng, 2, PET_ENDINGS);
                    Value {
                        text: format!("{animal} {pet}"),
                        parts: vec![animal.to_string(), pet.clone()],
                        keyword: pet,
                    }
                })
                .collect(),
            Kind::FatherJob => from_list(rng, father_jobs),
            Kind::MotherJob => from_list(rng, mother_jobs),
            Kind::SchoolSubject => from_list(rng, SCHOOL_SUBJECTS),
            Kind::Hobby => from_list(rng, HOBBIES),
            Kind::Theme => from_list(rng, THEMES),
        }
    }
}

fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

// ---------------------------------------------------------------------------
// Invented words

/// Makes capitalised words from syllables, never repeating one and never
/// making one that contains (or is contained in) an earlier one, so keyword
/// matching cannot confuse two invented values.
#[derive(Debug, Default)]
pub(crate) struct Inventor {
    used: Vec<String>,
    used_set: HashSet<String>,
}

impl Inventor {
    pub(crate) fn invent(&mut self, rng: &mut ChaCha8Rng, syllables: usize, endings: &[&str]) -> String {
        let mut attempts = 0usize;
        loop {
            attempts += 1;
            // Widen the space if the short words are used up.
            let n = syllables + attempts / 200;
            let mut word: String = (0..n)
                .map(|_| SYLLABLES.choose(rng).copied().unwrap_or("vel"))
                .collect();
            word.push_str(endings.choose(rng).copied().unwrap_or(""));
            if word.len() < 5 || self.used_set.contains(&word) {
                continue;
            }
            if self
                .used
                .iter()
                .any(|u| u.contains(word.as_str()) || word.contains(u.as_str()))
            {
                continue;
            }
            self.used_set.insert(word.clone());
            self.used.push(word.clone());
            return capitalise(&word);
        }
    }
}

pub(crate) fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

// Syllables picked to sound like names while avoiding common English words.
const SYLLABLES: &[&str] = &[
    "vel", "mor", "qua", "thi", "dra", "quen", "bal", "sor", "ith", "lum", "far", "gel", "ost", "ruv", "pel", "zan",
    "cor", "wen", "tal", "mir", "oph", "dun", "sel", "yra", "kes", "bri", "nol", "tav", "hem", "ulo", "vask", "ner",
    "isk", "zor", "eld", "jov", "pra", "lir", "obe", "kaz", "umb", "fey", "rho", "tesk", "gal", "vin", "xa", "nix",
];
pub(crate) const FIRST_NAME_ENDINGS: &[&str] = &["a", "en", "is", "o", "ric", "wyn", "eth", "ia", "an", "el"];
pub(crate) const SURNAME_ENDINGS: &[&str] = &["ley", "ton", "vik", "ard", "ova", "ine", "holm", "ez", "ski", "ander"];
pub(crate) const PLACE_ENDINGS: &[&str] = &["a", "ora", "ford", "mere", "heim", "ach", "is", "ovo", "und", "esh"];
pub(crate) const COUNTRY_ENDINGS: &[&str] = &["ia", "and", "istan", "ova", "ene", "aria", "ovia", "ur"];
pub(crate) const PET_ENDINGS: &[&str] = &["le", "kin", "o", "y", "bo", "sy", "pip", "ette"];

const GENRE_MOODS: &[&str] = &[
    "maritime",
    "gothic",
    "pastoral",
    "satirical",
    "alpine",
    "courtroom",
    "culinary",
    "frontier",
];
const GENRE_FORMS: &[&str] = &["mystery", "romance", "fantasy", "saga", "thriller", "comedy", "horror"];

const TITLE_ADJECTIVES: &[&str] = &[
    "Silent",
    "Hollow",
    "Crimson",
    "Patient",
    "Burning",
    "Forgotten",
    "Gilded",
    "Restless",
    "Borrowed",
    "Sleeping",
    "Northern",
    "Broken",
];
const TITLE_NOUNS: &[&str] = &[
    "Lantern",
    "Orchard",
    "Harbour",
    "Compass",
    "Staircase",
    "Tapestry",
    "Lighthouse",
    "Garden",
    "Bridge",
    "Clockwork",
    "Mirror",
    "Archive",
];
const AWARD_CATEGORIES: &[&str] = &[
    "Fiction",
    "Short Fiction",
    "Debut Novels",
    "Historical Fiction",
    "Literary Prose",
    "Poetry",
];
const PET_ANIMALS: &[&str] = &[
    "tortoise",
    "parrot",
    "greyhound",
    "ferret",
    "iguana",
    "hedgehog",
    "goldfish",
    "owl",
    "rabbit",
    "cockatoo",
];

/// Split in half (after shuffling) between fathers and mothers, so the two
/// kinds never share a value.
const OCCUPATIONS: &[&str] = &[
    "clockmaker",
    "beekeeper",
    "lighthouse keeper",
    "glassblower",
    "cartographer",
    "ferryman",
    "bookbinder",
    "locksmith",
    "veterinarian",
    "astronomer",
    "stonemason",
    "florist",
    "tailor",
    "blacksmith",
    "pharmacist",
    "shipwright",
    "baker",
    "librarian",
    "apothecary",
    "surveyor",
    "fisherman",
    "carpenter",
    "dentist",
    "midwife",
    "translator",
    "potter",
    "quarryman",
    "jeweller",
    "architect",
    "plumber",
    "cobbler",
    "weaver",
    "violinist",
    "sculptor",
    "photographer",
    "journalist",
    "electrician",
    "gardener",
    "butcher",
    "postman",
    "nurse",
    "firefighter",
    "accountant",
    "lawyer",
    "tram driver",
    "judge",
    "geologist",
    "pilot",
    "brewer",
    "cheesemaker",
    "organist",
    "diplomat",
    "zookeeper",
    "lamplighter",
    "botanist",
    "tanner",
    "printer",
    "chef",
    "signalman",
    "welder",
    "hatter",
    "furrier",
    "sailmaker",
    "upholsterer",
    "goldsmith",
    "perfumer",
    "taxidermist",
    "falconer",
    "chimney sweep",
    "lexicographer",
    "puppeteer",
    "harpist",
    "archivist",
    "meteorologist",
    "optician",
    "barber",
    "saddler",
    "glazier",
    "cooper",
    "wheelwright",
    "roofer",
    "typesetter",
    "locomotive driver",
    "shepherd",
    "vintner",
    "miller",
    "rope maker",
    "candlemaker",
    "toymaker",
    "piano tuner",
    "radio operator",
    "stage magician",
    "customs officer",
    "museum curator",
    "lock keeper",
    "bridge engineer",
    "pastry cook",
    "court clerk",
    "harbour master",
    "tax inspector",
];
const SCHOOL_SUBJECTS: &[&str] = &[
    "astronomy",
    "botany",
    "geology",
    "chemistry",
    "geometry",
    "Latin",
    "music theory",
    "marine biology",
    "woodwork",
    "rhetoric",
    "cartography",
    "zoology",
    "drama",
    "calligraphy",
    "ancient Greek",
    "economics",
    "physics",
    "algebra",
    "medieval history",
    "philosophy",
    "meteorology",
    "anatomy",
    "statistics",
    "ecology",
    "archaeology",
    "sculpture",
    "choir singing",
    "oceanography",
    "logic",
    "mythology",
    "navigation",
    "ceramics",
    "embroidery",
    "typography",
    "entomology",
    "volcanology",
    "linguistics",
    "palaeography",
    "agriculture",
    "forestry",
    "heraldry",
    "optics",
    "mineralogy",
    "acoustics",
    "ornithology",
    "mechanics",
    "genetics",
    "paleontology",
    "glaciology",
    "bookkeeping",
];
const HOBBIES: &[&str] = &[
    "restoring antique clocks",
    "collecting river stones",
    "painting lighthouses",
    "carving wooden spoons",
    "photographing storms",
    "mapping forest trails",
    "baking rye bread",
    "repairing old radios",
    "growing orchids",
    "building model ships",
    "watching migrating birds",
    "knitting striped scarves",
    "playing the cello",
    "pressing wild flowers",
    "binding notebooks by hand",
    "fermenting plum wine",
    "sketching old doorways",
    "swimming in cold lakes",
    "collecting postage stamps",
    "solving chess problems",
    "tending a vegetable plot",
    "flying paper kites",
    "restoring vintage bicycles",
    "learning dead languages",
    "stargazing from rooftops",
    "making stained glass",
    "rowing on the river",
    "keeping tropical fish",
    "training carrier pigeons",
    "weaving straw baskets",
    "hiking mountain ridges",
    "playing the accordion",
    "collecting seashells",
    "roasting coffee beans",
    "folding paper cranes",
    "fencing with sabres",
    "rock climbing",
    "brewing ginger beer",
    "collecting fountain pens",
    "ice skating at dawn",
    "foraging for mushrooms",
    "juggling wooden clubs",
    "drawing botanical studies",
    "rebuilding antique typewriters",
    "sailing small dinghies",
    "composing folk songs",
    "cataloguing moths",
    "tracing family trees",
    "making marmalade",
    "restoring rocking horses",
];
const THEMES: &[&str] = &[
    "exile and return",
    "inherited guilt",
    "memory and forgetting",
    "sibling rivalry",
    "lost letters",
    "the sea as a border",
    "small-town secrets",
    "faith and doubt",
    "forgiveness between generations",
    "the cost of ambition",
    "unfinished journeys",
    "borrowed identities",
    "the weight of promises",
    "grief in winter",
    "stolen inheritances",
    "friendship across wars",
    "silence in families",
    "the kindness of strangers",
    "debts that outlive people",
    "homecoming",
    "broken engagements",
    "rival mapmakers",
    "forged paintings",
    "vanished villages",
    "loyalty to a dying king",
    "twins separated at birth",
    "the price of fame",
    "rebuilding after floods",
    "wandering musicians",
    "hidden libraries",
    "lighthouse solitude",
    "disputed borders",
    "second chances",
    "misread prophecies",
    "midlife reinvention",
    "feuding neighbours",
    "orphaned heirs",
    "a town without clocks",
    "letters never sent",
    "mapping the unknown",
    "loyalty and betrayal",
    "quiet rebellion",
    "fading aristocracy",
    "mountain isolation",
    "the ethics of invention",
    "gardens as refuge",
    "shipwreck survivors",
    "an inherited bookshop",
    "the last harvest",
    "exiled poets",
];
