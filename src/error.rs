//! The crate's one error type.
//!
//! Every public function that can be called with something wrong (a shape, a hyper-parameter, a
//! label, a file) returns [`Result`]. Each message says what was given and what was expected.

use std::path::PathBuf;

/// The result type of every fallible public function in handgrad.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in handgrad, with structured fields.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor had the wrong rank or size for an operation.
    ///
    /// `op` names the operation or layer, `expected` describes the allowed shapes (with the layout
    /// letters), `got` is the shape that was passed.
    #[error("{op} expects {expected}, got shape {got:?}")]
    Shape {
        /// The operation or layer that rejected the input, e.g. `"Dense(in=64, out=10)"`.
        op: String,
        /// What was allowed, e.g. `"(B, 64) input"`.
        expected: String,
        /// The shape that was given.
        got: Vec<usize>,
    },

    /// A configuration value or hyper-parameter is outside its allowed range.
    #[error("{op}: invalid {name} = {value}; expected {expected}")]
    Config {
        /// The component being configured, e.g. `"Adam"`.
        op: String,
        /// The name of the offending setting, e.g. `"lr"`.
        name: String,
        /// The value that was given, formatted.
        value: String,
        /// The allowed range, e.g. `"a finite value >= 0"`.
        expected: String,
    },

    /// Labels or targets do not match the predictions they are scored against.
    #[error("{op}: {message}")]
    Label {
        /// The loss or metric, e.g. `"sparse_categorical_crossentropy"`.
        op: String,
        /// What is wrong, with the counts or values involved.
        message: String,
    },

    /// A named parameter or state entry is missing or does not fit.
    #[error("parameter {name:?}: {message}")]
    Param {
        /// The hierarchical parameter name, e.g. `"0.weight"`.
        name: String,
        /// What is wrong with it.
        message: String,
    },

    /// An object was used before it was ready (e.g. a model used before `build`).
    #[error("{0}")]
    State(String),

    /// A file could not be read or written.
    #[error("{}", io_message(path, source))]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A file or buffer is malformed (corrupt, truncated, or not in the expected format).
    #[error("{source_name}: {message}")]
    Format {
        /// The file name or a description of the buffer.
        source_name: String,
        /// What is wrong, e.g. `"IDX header declares 60000 images but holds 12 bytes"`.
        message: String,
    },
}

/// An I/O error without a file name (e.g. from a `Read` or `Write` the caller supplied) becomes
/// an [`Error::Io`] with an empty path, so `?` works on `std::io::Result`s; prefer
/// [`Error::io`], which names the file.
impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io {
            path: PathBuf::new(),
            source,
        }
    }
}

/// `"path: error"`, or just the error when no path is known.
fn io_message(path: &std::path::Path, source: &std::io::Error) -> String {
    if path.as_os_str().is_empty() {
        source.to_string()
    } else {
        format!("{}: {source}", path.display())
    }
}

impl Error {
    /// Builds an [`Error::Shape`].
    pub fn shape(op: impl Into<String>, expected: impl Into<String>, got: &[usize]) -> Self {
        Error::Shape {
            op: op.into(),
            expected: expected.into(),
            got: got.to_vec(),
        }
    }

    /// Builds an [`Error::Config`].
    pub fn config(
        op: impl Into<String>,
        name: impl Into<String>,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::Config {
            op: op.into(),
            name: name.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// Builds an [`Error::Label`].
    pub fn label(op: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Label {
            op: op.into(),
            message: message.into(),
        }
    }

    /// Builds an [`Error::Io`] naming the file an I/O error happened on.
    ///
    /// ```
    /// let e = handgrad::Error::io("weights.bin", std::io::Error::other("disk full"));
    /// assert_eq!(e.to_string(), "weights.bin: disk full");
    /// ```
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Param`].
    pub fn param(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Param {
            name: name.into(),
            message: message.into(),
        }
    }

    /// Builds an [`Error::Format`].
    pub fn format(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Format {
            source_name: source_name.into(),
            message: message.into(),
        }
    }
}
