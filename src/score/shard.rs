//! Which shard a path belongs to, and which shard this process is: from `--shard I/N` or from
//! the scheduler's environment (Slurm job arrays, Kubernetes Indexed Jobs).

use crate::error::{Error, Result};
use std::fmt;

/// One shard of `count`: shard `index` scores the paths whose [`shard_key`] is `index` mod
/// `count`.
///
/// ```
/// use fracture::score::Shard;
/// let shard: Shard = "1/3".parse()?;
/// assert_eq!((shard.index, shard.count), (1, 3));
/// assert_eq!(shard.to_string(), "1/3");
/// assert!("3/3".parse::<Shard>().is_err());
/// // Every path is in exactly one shard of three.
/// let owners = (0..3).filter(|&i| Shard::new(i, 3).unwrap().contains("a/b.jpg")).count();
/// assert_eq!(owners, 1);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// How many shards there are (at least 1).
    pub count: usize,
}

impl Shard {
    /// The whole input as one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`; an error unless `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::InvalidConfig(format!(
                "shard {index} of {count}: the index must be in 0..{count} and the count at least 1"
            )));
        }
        Ok(Self { index, count })
    }

    /// Whether `relative_path` (as written in the score rows: `/`-separated, relative to the
    /// input) belongs to this shard.
    pub fn contains(&self, relative_path: &str) -> bool {
        self.of(relative_path) == self.index
    }

    /// The shard index `relative_path` belongs to among `self.count`.
    pub fn of(&self, relative_path: &str) -> usize {
        // u64 % count fits in usize because count is a usize.
        (shard_key(relative_path) % self.count as u64) as usize
    }

    /// The shard this process is, from the scheduler's environment: see [`Shard::from_vars`].
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The shard from environment variables read through `var`:
    /// - Slurm job arrays: `SLURM_ARRAY_TASK_ID`, with `SLURM_ARRAY_TASK_COUNT`, or
    ///   `SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1` (the index is the task id minus
    ///   `SLURM_ARRAY_TASK_MIN`, divided by `SLURM_ARRAY_TASK_STEP` when there is one), so
    ///   `--array=0-3` and `--array=1-4` both give shards 0..4 of 4; with `FRACTURE_SHARDS`
    ///   set, the task id itself is the index and `FRACTURE_SHARDS` the count, so that one task
    ///   resubmitted alone (`sbatch --array=1`, whose array count is 1) is still shard 1 of 4;
    /// - Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX` with `FRACTURE_SHARDS` (the Job's
    ///   `completions`, which Kubernetes does not pass to the pod);
    /// - neither: [`Shard::ALL`]. Slurm's variables win when both are set.
    ///
    /// ```
    /// use fracture::score::Shard;
    /// let vars = |pairs: &'static [(&'static str, &'static str)]| {
    ///     move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    /// };
    /// static SLURM: [(&str, &str); 3] = [("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_MAX", "4")];
    /// assert_eq!(Shard::from_vars(vars(&SLURM))?, Shard::new(2, 4)?);
    /// static K8S: [(&str, &str); 2] = [("JOB_COMPLETION_INDEX", "2"), ("FRACTURE_SHARDS", "3")];
    /// assert_eq!(Shard::from_vars(vars(&K8S))?, "2/3".parse()?);
    /// assert_eq!(Shard::from_vars(vars(&[]))?, Shard::ALL);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let number = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(text) if text.trim().is_empty() => Ok(None),
                Some(text) => text.trim().parse::<usize>().map(Some).map_err(|_| {
                    Error::InvalidConfig(format!(
                        "environment variable {name}={text:?} is not a non-negative integer"
                    ))
                }),
            }
        };
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            if let Some(count) = number("FRACTURE_SHARDS")? {
                // A task resubmitted alone (`--array=1`) sees a count of 1: the named count wins.
                return Self::new(id, count);
            }
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            let count = match (
                number("SLURM_ARRAY_TASK_COUNT")?,
                number("SLURM_ARRAY_TASK_MAX")?,
            ) {
                (Some(count), _) => count,
                (None, Some(max)) if max >= min => (max - min) / step + 1,
                _ => {
                    return Err(Error::InvalidConfig(
                        "SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor \
                         SLURM_ARRAY_TASK_MAX (>= MIN) is: pass --shard I/N"
                            .into(),
                    ))
                }
            };
            let offset = id
                .checked_sub(min)
                .filter(|o| o % step == 0)
                .ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "SLURM_ARRAY_TASK_ID {id} is not MIN {min} plus a multiple of STEP {step}"
                    ))
                })?;
            return Self::new(offset / step, count).map_err(|e| {
                Error::InvalidConfig(format!(
                    "Slurm array task {id} ({e}): use a contiguous --array such as 0-{} or pass \
                     --shard I/N",
                    count.saturating_sub(1)
                ))
            });
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = number("FRACTURE_SHARDS")?.ok_or_else(|| {
                Error::InvalidConfig(
                    "JOB_COMPLETION_INDEX is set but FRACTURE_SHARDS is not: set it to the \
                     Indexed Job's completions"
                        .into(),
                )
            })?;
            return Self::new(index, count);
        }
        Ok(Self::ALL)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = || Error::InvalidConfig(format!("shard {text:?}: expected I/N, e.g. 0/4"));
        let (index, count) = text.trim().split_once('/').ok_or_else(bad)?;
        let index = index.trim().parse().map_err(|_| bad())?;
        let count = count.trim().parse().map_err(|_| bad())?;
        Self::new(index, count)
    }
}

/// The stable 64-bit key of a relative path that decides its shard: FNV-1a over the path's
/// UTF-8 bytes. The same on every machine, run and Rust version (unlike std's hasher), and
/// independent of the order the input is listed in.
///
/// ```
/// // FNV-1a's published test vectors.
/// assert_eq!(fracture::score::shard_key(""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(fracture::score::shard_key("a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn shard_key(relative_path: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    relative_path.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}
