//! The errors of the operations the command line and the REST API share, each with the HTTP
//! status it maps to and, for bad input, the field it names.

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: `field` names what to fix.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such community or run.
    #[error("{0}")]
    NotFound(String),
    /// The endpoint exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The name is taken, or the operation does not fit the current state.
    #[error("{0}")]
    Conflict(String),
    /// Something on this machine failed (files, namespaces).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Bad input in `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A scenario or request body that did not parse or check: the field is the path its
    /// message starts with (`network.nodes: …`), the one serde quotes (unknown field `x`), or
    /// the key on the TOML line it points at.
    pub fn from_check(e: &anyhow::Error) -> Error {
        let text = format!("{e:#}");
        if let Some(field) = quoted(&text).or_else(|| toml_key(&text)) {
            return Error::invalid(field, text);
        }
        match text.split_once(": ") {
            Some((head, rest)) if is_path(head) => Error::invalid(head, rest),
            _ => Error::invalid("body", text),
        }
    }

    /// The HTTP status of the error.
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid { .. } => 400,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::Conflict(_) => 409,
            Error::Internal(_) => 500,
        }
    }

    /// The field to fix, for bad input.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The field serde names in "unknown field `x`" or "missing field `x`".
fn quoted(text: &str) -> Option<String> {
    let at = text
        .find("unknown field `")
        .or_else(|| text.find("missing field `"))?;
    let rest = &text[at + "unknown field `".len()..];
    rest.split_once('`').map(|(name, _)| name.to_owned())
}

/// Whether `head` is a field path (`network.nodes`, `community[0] (a).members`), not prose.
fn is_path(head: &str) -> bool {
    head.len() < 80 && !head.contains(['\n', '`']) && (!head.contains(' ') || head.contains('['))
}

/// The key on the line a TOML error points at (`4 | size = "big"`).
fn toml_key(text: &str) -> Option<String> {
    if !text.contains("TOML parse error") {
        return None;
    }
    text.lines().find_map(|line| {
        let (number, rest) = line.split_once(" | ")?;
        number.trim().parse::<u32>().ok()?;
        let (key, _) = rest.split_once('=')?;
        Some(key.trim().to_owned()).filter(|k| !k.is_empty())
    })
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Internal(e.to_string())
    }
}
