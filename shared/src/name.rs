//! Names operators give mirrors (`hotpush-origin agent add NAME`). They
//! appear in logs, metric labels, file names and URLs, so they are checked
//! once, when given.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, thiserror::Error)]
#[error("bad agent name {name:?}: {why}")]
pub struct NameError {
    pub name: String,
    pub why: &'static str,
}

/// An agent's name: 1–64 characters of `A-Z a-z 0-9 . _ -`, starting with
/// a letter or digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentName(String);

impl AgentName {
    /// Validates a name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let bad = |why| NameError {
            name: name.to_owned(),
            why,
        };
        if name.is_empty() || name.len() > 64 {
            return Err(bad("must be 1 to 64 characters"));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(bad("must start with a letter or digit"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(bad("only A-Z a-z 0-9 . _ - are allowed"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for AgentName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl TryFrom<String> for AgentName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(&s)
    }
}

impl From<AgentName> for String {
    fn from(n: AgentName) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["m0", "mirror-a.example", "A_1"] {
            assert!(AgentName::new(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "-x", ".x", "a b", "a\"b", "a\nb", "é", &"a".repeat(65)] {
            assert!(AgentName::new(bad).is_err(), "{bad:?}");
        }
    }
}
