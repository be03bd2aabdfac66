//! A stratified, seeded, leakage-free train/val/test split with exact counts.
//!
//! # Rules
//! 1. **Units.** Byte-identical images (same SHA-256) form one unit that always goes to one
//!    part, so no copy of a test image is ever trained on. A unit's class is the label of its
//!    first member (FracAtlas never has copies across classes).
//! 2. **Exact counts per class (largest remainder).** For a class of `n` images and fractions
//!    `(train, val, test)`, each part's quota is `n * fraction`; each part first gets the
//!    quota rounded down (a quota within 1e-9 of an integer counts as that integer), and the
//!    images left over go one each to the parts with the largest fractional remainders, ties
//!    to the earlier part (train, then val, then test). So the counts always sum to `n` and
//!    each is within one image of `n * fraction`. Example: 717 fractured at 70/10/20 have
//!    quotas 501.9, 71.7, 143.4 and become 502, 72, 143.
//! 3. **Seeded assignment.** Each class's units are shuffled with a ChaCha8 generator seeded
//!    from `seed`. Units with several images are placed first, each in a part drawn with
//!    probability proportional to that part's remaining room among the parts where it fits;
//!    single images then fill each part's remaining room. Counts are exact whenever the
//!    multi-image units fit (always the case for FracAtlas); otherwise a part can be off by
//!    less than the size of the largest unit.
//! 4. Within a part, samples keep the dataset's order (sorted by path), so the same dataset
//!    and seed always give the identical manifest.

use super::stored_path::{self, PathForm};
use super::{BodyPart, ClassCounts, ContentHash, Label, Sample};
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// Fractions and seed of a split. Default: 70/10/20, seed 42.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitConfig {
    /// Fraction of each class used for training.
    pub train: f64,
    /// Fraction used for validation (checkpoint selection).
    pub val: f64,
    /// Fraction held out for the final test.
    pub test: f64,
    /// Seed of the shuffle.
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            train: 0.7,
            val: 0.1,
            test: 0.2,
            seed: 42,
        }
    }
}

impl SplitConfig {
    /// Check that the fractions are finite, non-negative and sum to 1 (within 1e-6).
    ///
    /// ```
    /// use fracture::dataset::SplitConfig;
    /// assert!(SplitConfig::default().validate().is_ok());
    /// assert!(SplitConfig { train: 0.9, ..Default::default() }.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        let fractions = [self.train, self.val, self.test];
        if fractions.iter().any(|f| !f.is_finite() || *f < 0.0) {
            return Err(Error::InvalidConfig(format!(
                "split fractions must be finite and non-negative, found {fractions:?}"
            )));
        }
        let sum: f64 = fractions.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(Error::InvalidConfig(format!(
                "split fractions must sum to 1, found {} + {} + {} = {sum}",
                self.train, self.val, self.test
            )));
        }
        Ok(())
    }

    fn fractions(&self) -> [f64; 3] {
        [self.train, self.val, self.test]
    }
}

/// Which part of a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartName {
    /// Training images.
    Train,
    /// Validation images.
    Val,
    /// Test images.
    Test,
}

impl PartName {
    /// The three parts in order.
    pub const ALL: [PartName; 3] = [PartName::Train, PartName::Val, PartName::Test];

    /// `train`, `val` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            PartName::Train => "train",
            PartName::Val => "val",
            PartName::Test => "test",
        }
    }

    /// Parse `train`, `val` (or `valid`, `validation`) or `test`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "train" => Some(PartName::Train),
            "val" | "valid" | "validation" => Some(PartName::Val),
            "test" => Some(PartName::Test),
            _ => None,
        }
    }
}

impl fmt::Display for PartName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// One part of a split: its name and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Which part this is.
    pub name: PartName,
    /// Its samples, in dataset order.
    pub samples: Vec<Sample>,
}

impl Part {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the part holds no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Samples per class.
    pub fn counts(&self) -> ClassCounts {
        ClassCounts::of(&self.samples)
    }

    /// Counts per class and per body part.
    pub fn summary(&self) -> PartSummary {
        let mut by_body_part: BTreeMap<BodyPart, ClassCounts> = BTreeMap::new();
        for s in &self.samples {
            by_body_part.entry(s.body_part()).or_default().add(s.label);
        }
        PartSummary {
            name: self.name,
            counts: self.counts(),
            by_body_part,
        }
    }
}

/// What a part holds: counts per class, and per body part and class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSummary {
    /// The part.
    pub name: PartName,
    /// Images per class.
    pub counts: ClassCounts,
    /// Images per body part and class.
    pub by_body_part: BTreeMap<BodyPart, ClassCounts>,
}

impl fmt::Display for PartSummary {
    /// One line: `train: 2858 images (502 fractured, 2356 not) | hand 1 / 300, ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>5}: {:>5} images ({:>4} fractured, {:>5} not fractured)",
            self.name,
            self.counts.total(),
            self.counts.fractured,
            self.counts.not_fractured
        )?;
        let parts: Vec<String> = self
            .by_body_part
            .iter()
            .map(|(part, c)| format!("{part} {}/{}", c.fractured, c.not_fractured))
            .collect();
        if !parts.is_empty() {
            write!(f, " | fractured/not by body part: {}", parts.join(", "))?;
        }
        Ok(())
    }
}

/// A train/val/test split of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Training part.
    pub train: Part,
    /// Validation part.
    pub val: Part,
    /// Test part.
    pub test: Part,
}

impl Split {
    /// The three parts, in order.
    pub fn parts(&self) -> [&Part; 3] {
        [&self.train, &self.val, &self.test]
    }

    /// The part with this name.
    pub fn part(&self, name: PartName) -> &Part {
        match name {
            PartName::Train => &self.train,
            PartName::Val => &self.val,
            PartName::Test => &self.test,
        }
    }

    /// Summaries of the three parts.
    pub fn summary(&self) -> [PartSummary; 3] {
        self.parts().map(Part::summary)
    }

    /// Content hashes found in more than one part (empty for every split this module
    /// makes; useful to check a manifest edited by hand).
    pub fn leaking_hashes(&self) -> Vec<ContentHash> {
        let mut seen: HashMap<ContentHash, PartName> = HashMap::new();
        let mut leaks = Vec::new();
        for part in self.parts() {
            for s in &part.samples {
                let first = *seen.entry(s.hash).or_insert(part.name);
                if first != part.name && !leaks.contains(&s.hash) {
                    leaks.push(s.hash);
                }
            }
        }
        leaks.sort();
        leaks
    }

    /// The deepest folder holding every image of the split
    /// ([`stored_path::data_root`]); `None` when no path is absolute (a split read from a
    /// bundle, whose paths are stored relative to it).
    pub fn data_root(&self) -> Option<PathBuf> {
        stored_path::data_root(self.samples().map(|s| s.path.as_path()))
    }

    /// This split with every path in `form` against the data root `root` (what a bundle's
    /// `split.csv` holds): compare a split opened from `--data` with a bundle's by
    /// `bundle_split.first_difference(&data_split.stored(&form, &root))`.
    ///
    /// ```
    /// use fracture::dataset::stored_path::PathForm;
    /// use fracture::dataset::{synthetic::SyntheticConfig, FracAtlas, SplitConfig};
    /// let dir = tempfile::tempdir()?;
    /// SyntheticConfig { n_fractured: 3, n_not_fractured: 3, ..Default::default() }.generate_to(dir.path())?;
    /// let split = FracAtlas::open(dir.path())?.split(&SplitConfig::default())?;
    /// let root = split.data_root().unwrap();
    /// let stored = split.stored(&PathForm::Relative, &root);
    /// assert!(stored.train.samples.iter().all(|s| s.path.is_relative()));
    /// assert_eq!(stored.rooted_at(&root), split);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stored(&self, form: &PathForm, root: &Path) -> Split {
        self.map_paths(|p| PathBuf::from(form.store(root, p)))
    }

    /// This split with every relative path joined to `root` (the folder the images are in
    /// now): the way back from [`Split::stored`] in the relative form. Absolute paths are kept.
    pub fn rooted_at(&self, root: impl AsRef<Path>) -> Split {
        let root = root.as_ref();
        self.map_paths(|p| root.join(p))
    }

    fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.parts().into_iter().flat_map(|p| p.samples.iter())
    }

    fn map_paths(&self, f: impl Fn(&Path) -> PathBuf) -> Split {
        let mut split = self.clone();
        for part in [&mut split.train, &mut split.val, &mut split.test] {
            for s in &mut part.samples {
                s.path = f(&s.path);
            }
        }
        split
    }
}

impl Split {
    /// This split (a bundle's, its paths in `form`: relative to the data root, salted hashes,
    /// or absolute in bundles older than the relative form) found in `samples`, a data set
    /// opened from where the images are now (`--data`): the same split with `samples`' paths
    /// and metadata. Each image is known by its stored form below the folder holding all of a
    /// side's images, so the folder may have moved. `samples` must hold exactly this split's
    /// images, part by part, with the same labels (compared with [`Split::first_difference`])
    /// and the same content (SHA-256); any other data set is an error naming the first
    /// difference, so that a changed folder never puts a training image into the test part.
    ///
    /// ```
    /// use fracture::dataset::stored_path::{PathForm, PathSalt};
    /// use fracture::dataset::{synthetic::SyntheticConfig, FracAtlas, SplitConfig};
    /// let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    /// let config = SyntheticConfig { n_fractured: 5, n_not_fractured: 5, ..Default::default() };
    /// config.generate_to(a.path())?;
    /// config.generate_to(b.path())?; // the same images in another folder
    /// let split = FracAtlas::open(a.path())?.split(&SplitConfig { seed: 7, ..SplitConfig::default() })?;
    /// let form = PathForm::SaltedHash(PathSalt::new("sixteen bytes at least")?);
    /// let stored = split.stored(&form, &split.data_root().unwrap()); // as a bundle holds it
    /// let located = stored.locate(&FracAtlas::open(b.path())?.samples, &form)?;
    /// assert_eq!(located.test.len(), split.test.len());
    /// assert!(located.test.samples[0].path.starts_with(b.path().canonicalize()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn locate(&self, samples: &[Sample], form: &PathForm) -> Result<Split> {
        let own_root = self.data_root().unwrap_or_default();
        let data_root =
            stored_path::data_root(samples.iter().map(|s| s.path.as_path())).unwrap_or_default();
        let part_of: HashMap<String, PartName> = self
            .parts()
            .into_iter()
            .flat_map(|p| p.samples.iter().map(move |s| (p.name, s)))
            .map(|(part, s)| (form.store(&own_root, &s.path), part))
            .collect();
        let mut found_at: HashMap<String, PathBuf> = HashMap::new();
        let mut located = PartName::ALL.map(|name| Part {
            name,
            samples: Vec::new(),
        });
        let mut unlisted = Vec::new();
        for sample in samples {
            let key = form.store(&data_root, &sample.path);
            match part_of.get(&key) {
                Some(&part) => {
                    located[part as usize].samples.push(sample.clone());
                    found_at.insert(key, sample.path.clone());
                }
                None => unlisted.push(&sample.path),
            }
        }
        let [train, val, test] = located;
        let located = Split { train, val, test };
        // The recorded split as it reads in `samples`' folder (an image not found there keeps
        // its stored form, which names it in the difference).
        let mut rebased = self.clone();
        for part in [&mut rebased.train, &mut rebased.val, &mut rebased.test] {
            for s in &mut part.samples {
                let key = form.store(&own_root, &s.path);
                s.path = found_at
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| data_root.join(key));
            }
            part.samples.sort_by(|a, b| a.path.cmp(&b.path));
        }
        let refuse = |what: String| {
            Err(Error::Dataset {
                path: data_root.clone(),
                message: format!(
                    "does not hold the recorded split (paths {}), so its parts cannot be \
                     trusted to be held out: {what}",
                    form.describe()
                ),
            })
        };
        if let Some(difference) = rebased.first_difference(&located) {
            return refuse(format!("{difference} (recorded against found)"));
        }
        if let Some(first) = unlisted.first() {
            return refuse(format!(
                "{} image(s) in no part of the recorded split, the first {}",
                unlisted.len(),
                first.display()
            ));
        }
        for (recorded, found) in rebased.parts().into_iter().zip(located.parts()) {
            for (r, f) in recorded.samples.iter().zip(&found.samples) {
                if r.hash != f.hash {
                    return refuse(format!(
                        "{} ({} part) has other content than the recorded image (SHA-256 {} \
                         recorded, {} found)",
                        f.path.display(),
                        recorded.name,
                        r.hash,
                        f.hash
                    ));
                }
            }
        }
        Ok(located)
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [train, val, test] = self.summary();
        write!(f, "{train}\n{val}\n{test}")
    }
}

/// Exact per-part counts for `n` items (rule 2 of the module docs).
///
/// ```
/// use fracture::dataset::split::exact_counts;
/// assert_eq!(exact_counts(717, [0.7, 0.1, 0.2]), [502, 72, 143]);
/// assert_eq!(exact_counts(3366, [0.7, 0.1, 0.2]), [2356, 337, 673]);
/// assert_eq!(exact_counts(10, [0.7, 0.1, 0.2]), [7, 1, 2]);
/// ```
pub fn exact_counts(n: usize, fractions: [f64; 3]) -> [usize; 3] {
    let quotas = fractions.map(|f| n as f64 * f);
    let mut counts = quotas.map(|q| (q + 1e-9).floor().max(0.0) as usize);
    let remainders = [0, 1, 2].map(|p| quotas[p] - counts[p] as f64);
    let mut order = [0usize, 1, 2];
    // Stable sort: equal remainders keep train < val < test.
    order.sort_by(|&a, &b| remainders[b].total_cmp(&remainders[a]));
    let assigned: usize = counts.iter().sum();
    for &p in order.iter().cycle().take(n.saturating_sub(assigned)) {
        counts[p] += 1;
    }
    counts
}

/// Split samples by the rules of the module docs.
pub(crate) fn split_samples(samples: &[Sample], config: &SplitConfig) -> Result<Split> {
    config.validate()?;
    let mut units: BTreeMap<ContentHash, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        units.entry(s.hash).or_default().push(i);
    }
    let mut units: Vec<Vec<usize>> = units.into_values().collect();
    units.sort_by_key(|u| u.first().copied());

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut part_of = vec![0usize; samples.len()];
    for label in Label::ALL {
        let class_units: Vec<&Vec<usize>> = units
            .iter()
            .filter(|u| u.first().is_some_and(|&i| samples[i].label == label))
            .collect();
        let n: usize = class_units.iter().map(|u| u.len()).sum();
        let targets = exact_counts(n, config.fractions());
        for (unit, part) in assign_units(class_units, targets, &mut rng) {
            for &i in unit {
                part_of[i] = part;
            }
        }
    }

    let mut parts = PartName::ALL.map(|name| Part {
        name,
        samples: Vec::new(),
    });
    for (sample, &p) in samples.iter().zip(&part_of) {
        if let Some(part) = parts.get_mut(p) {
            part.samples.push(sample.clone());
        }
    }
    let [train, val, test] = parts;
    Ok(Split { train, val, test })
}

/// Shuffle one class's units and give each a part index (rule 3 of the module docs).
fn assign_units<'a>(
    mut units: Vec<&'a Vec<usize>>,
    targets: [usize; 3],
    rng: &mut ChaCha8Rng,
) -> Vec<(&'a Vec<usize>, usize)> {
    // Fisher-Yates with our own generator, so the order only depends on the seed.
    for i in (1..units.len()).rev() {
        let j = rng.random_range(0..=i);
        units.swap(i, j);
    }
    let (multi, single): (Vec<_>, Vec<_>) = units.into_iter().partition(|u| u.len() > 1);
    let mut room = targets.map(|t| t as i64);
    let mut assigned = Vec::new();
    for unit in multi {
        let size = unit.len() as i64;
        let fits: Vec<usize> = (0..3).filter(|&p| room[p] >= size).collect();
        let total: i64 = fits.iter().map(|&p| room[p]).sum();
        let part = if total > 0 {
            let mut draw = rng.random_range(0..total);
            let mut chosen = fits[0];
            for &p in &fits {
                if draw < room[p] {
                    chosen = p;
                    break;
                }
                draw -= room[p];
            }
            chosen
        } else {
            most_room(&room)
        };
        room[part] -= size;
        assigned.push((unit, part));
    }
    for unit in single {
        let part = most_room(&room);
        room[part] -= 1;
        assigned.push((unit, part));
    }
    assigned
}

/// The part with the most room left, ties to the earlier part.
fn most_room(room: &[i64; 3]) -> usize {
    let mut best = 0;
    for p in 1..3 {
        if room[p] > room[best] {
            best = p;
        }
    }
    best
}
