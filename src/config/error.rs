//! The configuration's error type: one variant per kind of mistake, each message naming the
//! field (or file) at fault, lowercase, with the cause kept as a `#[source]`.

use std::path::PathBuf;

/// Why a configuration was refused. Every message names the field (or file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, or does not have the expected shape (an unknown field, a
    /// wrong type). The source's message names the key and shows the line.
    #[error("cannot parse {origin}")]
    Parse {
        /// What was parsed: a file's path, or a description of the text.
        origin: String,
        /// The TOML error, with line, column and offending key.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A socket address that does not parse (`host:port` with a literal IP).
    #[error("{field}: invalid socket address \"{value}\"")]
    InvalidAddress {
        /// The field's path.
        field: String,
        /// The value given.
        value: String,
    },
    /// A duration that humantime does not understand (`60s`, `1m`, `500ms`, `1h`).
    #[error("{field}: invalid duration \"{value}\"")]
    InvalidDuration {
        /// The field's path.
        field: String,
        /// The value given.
        value: String,
        /// Why it does not parse.
        #[source]
        source: humantime::DurationError,
    },
    /// A duration too large to represent as a protobuf `Duration`.
    #[error("{field}: duration \"{value}\" is too large")]
    DurationTooLarge {
        /// The field's path.
        field: String,
        /// The value given.
        value: String,
    },
    /// A name outside the field's fixed set of values.
    #[error("{field}: unknown value \"{value}\" (expected one of: {expected})")]
    InvalidEnum {
        /// The field's path.
        field: String,
        /// The value given.
        value: String,
        /// The accepted values, comma separated.
        expected: &'static str,
    },
    /// A value outside its bounds.
    #[error("{field}: {value} is out of range (expected {range})")]
    OutOfRange {
        /// The field's path.
        field: String,
        /// The value given.
        value: String,
        /// The accepted range, in words.
        range: String,
    },
    /// A log filter that `tracing_subscriber::EnvFilter` refuses.
    #[error("{field}: invalid log filter \"{value}\"")]
    InvalidLogFilter {
        /// The field's path (or the flag it came from).
        field: String,
        /// The value given.
        value: String,
        /// Why it does not parse.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A file named by a field (a certificate, a key) could not be read.
    #[error("{field}: cannot read {}", path.display())]
    ReadFile {
        /// The field's path.
        field: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file named by a field does not hold the PEM it should.
    #[error("{field}: {} does not hold {expected}", path.display())]
    InvalidPem {
        /// The field's path.
        field: String,
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
    },
    /// The Envoy rate limit rules (`[rls] config`) are invalid.
    #[error("rls")]
    Rls(#[from] crate::rls::RlsConfigError),
    /// A value that does not fit with the rest of the section.
    #[error("{field}: {reason}")]
    Conflict {
        /// The field's path.
        field: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// A required field is absent.
    #[error("{field}: missing")]
    Missing {
        /// The field's path.
        field: String,
    },
    /// A resources snippet with neither `[[resources]]` tables nor a top-level `name`.
    #[error(
        "no resources found (expected [[resources]] tables or a top-level resource with `name = ...`)"
    )]
    NoResources,
}
