//! The crate's single error type.
//!
//! Every variant carries the context a user needs to act on it: the file, the tensor name,
//! the expected and the found shape. Library code returns [`Result`] and never panics on
//! input it did not create itself.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in `fracture`.
///
/// ```
/// use fracture::Error;
/// let err = Error::InvalidInput("expected 3 channels, found 1".into());
/// assert!(err.to_string().contains("3 channels"));
/// ```
///
/// New variants may be added in minor versions (`#[non_exhaustive]`); decide what to do with
/// an error through its methods ([`Error::is_bad_file`]) rather than by listing variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from candle (tensor shapes, devices, kernels).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Input given to a model or function has the wrong shape or value.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A configuration that cannot be built or used.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The requested compute device is not compiled in or not present.
    #[error("device unavailable: {0}")]
    Device(String),

    /// A weights file or tensor set that does not fit the model.
    #[error("weights {source_name}: {message}")]
    Weights {
        /// Where the weights came from (a path, a hub repo/file, "random").
        source_name: String,
        /// What is wrong, including tensor names and shapes.
        message: String,
    },

    /// A file whose content cannot be parsed (bad header, truncated, wrong format).
    #[error("{path}: {message}")]
    Format {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// Downloading from (or reading the cache of) the Hugging Face hub failed.
    #[error("hub {repo}/{file}: {message}")]
    Hub {
        /// The repository id.
        repo: String,
        /// The file inside the repository.
        file: String,
        /// What went wrong and what to do about it.
        message: String,
    },

    /// Downloading a file (other than from the Hugging Face hub) failed or was refused.
    #[error("download {url}: {message}")]
    Download {
        /// The address of the file.
        url: String,
        /// What went wrong and what to do about it (the local path involved included).
        message: String,
    },

    /// A dataset that cannot be opened or used.
    #[error("dataset {path}: {message}")]
    Dataset {
        /// The dataset root or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// An image that cannot be decoded.
    #[error("image {path}: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// Why it could not be read.
        message: String,
    },

    /// Training stopped (non-finite loss, interrupted, ...).
    #[error("training: {0}")]
    Training(String),

    /// A metric that is not defined for the given data.
    #[error("metric: {0}")]
    Metric(String),

    /// A number computed for one image (its fracture logit, its features, its
    /// class-activation map) is NaN or infinite, so there is no answer for that image (usually
    /// corrupt weights). It is never read as "not fractured"; it stops the work.
    #[error("{image}: the {what} is {value}, not a finite number (corrupt weights?); no answer is given")]
    NonFinite {
        /// The image: its path when known, else its position (`image 3 of the batch`).
        image: String,
        /// Its position (from 0) in the batch it was computed in.
        index: usize,
        /// What was not finite (`fracture logit`, `backbone features`, `class-activation map`).
        what: String,
        /// The first such value.
        value: f64,
    },

    /// A bug in `fracture` itself (an invariant the code should have kept); please report it.
    #[error("internal error (a bug in fracture, please report it): {0}")]
    Internal(String),
}

impl Error {
    /// Whether the error is about one input file only (unreadable, undecodable, malformed), so
    /// that a loader going through many files may skip that file, report it and go on. Every
    /// other error (a bad configuration, a device failure, a bug) stops the work.
    ///
    /// ```
    /// use fracture::Error;
    /// assert!(Error::Image { path: "a.jpg".into(), message: "truncated".into() }.is_bad_file());
    /// assert!(!Error::Internal("buffer too short".into()).is_bad_file());
    /// ```
    pub fn is_bad_file(&self) -> bool {
        matches!(
            self,
            Error::Image { .. } | Error::Io { .. } | Error::Format { .. }
        )
    }

    /// An [`Error::NonFinite`] for image `index` of a batch (named by its position until
    /// [`Error::naming_image`] gives it a path).
    pub(crate) fn non_finite(index: usize, what: &str, value: f64) -> Self {
        Error::NonFinite {
            image: format!("image {index} of the batch"),
            index,
            what: what.to_string(),
            value,
        }
    }

    /// An [`Error::NonFinite`] named by `name(index)` (the image's path) when it gives one;
    /// any other error unchanged.
    pub(crate) fn naming_image(self, name: impl Fn(usize) -> Option<String>) -> Self {
        match self {
            Error::NonFinite {
                image,
                index,
                what,
                value,
            } => Error::NonFinite {
                image: name(index).unwrap_or(image),
                index,
                what,
                value,
            },
            other => other,
        }
    }

    /// Build an [`Error::Io`] from a path and an I/O error.
    ///
    /// ```
    /// use fracture::Error;
    /// let e = Error::io("missing.bin", std::io::Error::from(std::io::ErrorKind::NotFound));
    /// assert!(e.to_string().starts_with("missing.bin"));
    /// ```
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The first value that is NaN or infinite, with its position (one pass, for the checks that
/// keep a corrupt number from being read as an answer).
pub(crate) fn first_non_finite<T: Copy + Into<f64>>(values: &[T]) -> Option<(usize, f64)> {
    values
        .iter()
        .map(|&v| v.into())
        .enumerate()
        .find(|(_, v): &(usize, f64)| !v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_nan_or_infinity_is_found_with_its_position() {
        assert_eq!(first_non_finite(&[1.0f32, 2.0]), None);
        assert_eq!(
            first_non_finite(&[1.0f32, f32::INFINITY, f32::NAN]),
            Some((1, f64::INFINITY))
        );
        let (index, value) = first_non_finite(&[0.5f64, f64::NAN]).unwrap();
        assert!(index == 1 && value.is_nan());
    }

    #[test]
    fn a_non_finite_error_is_renamed_by_its_position() {
        let error = Error::non_finite(2, "fracture logit", f64::NAN);
        assert!(error
            .to_string()
            .starts_with("image 2 of the batch: the fracture logit is NaN"));
        let named = error.naming_image(|i| Some(format!("x{i}.png")));
        assert!(named.to_string().starts_with("x2.png: "), "{named}");
    }
}
