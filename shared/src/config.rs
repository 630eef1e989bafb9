//! What both daemons' TOML configs share: the error type and the parse
//! step. Each daemon keeps its own `RawConfig` (unknown keys refused) and
//! validates it into its own typed `Config`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// Reads a config file as text.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })
}

/// Parses TOML text; `path` names the file in errors.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: path.into(),
        source,
    })
}

/// Resolves `p` against the config file's directory unless it is absolute.
pub fn resolve(config_path: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(p)
    }
}
