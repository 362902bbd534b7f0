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
    /// message starts with (`network.nodes: …`) or the one serde quotes (unknown field `x`).
    pub fn from_check(e: &anyhow::Error) -> Error {
        let text = format!("{e:#}");
        let field = quoted(&text)
            .or_else(|| {
                text.split_once(": ")
                    .map(|(head, _)| head.to_owned())
                    .filter(|head| !head.contains(['\n', '`']) && head.len() < 80)
            })
            .unwrap_or_else(|| "body".into());
        Error::Invalid {
            field,
            message: text,
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

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Internal(e.to_string())
    }
}
