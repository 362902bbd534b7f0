//! Malformed input, reported one way: a decoder that meets bytes its protocol forbids gives them
//! a label all the same (nothing is lost), says why with a [`DecodeError`] and the count per
//! protocol reaches the summary and the JSON stats through [`DecodeErrors`].

use std::collections::BTreeMap;

/// Bytes that are not what protocol `protocol` allows at that point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {protocol} input: {what}")]
pub struct DecodeError {
    pub protocol: &'static str,
    pub what: &'static str,
}

impl DecodeError {
    /// `what` went wrong in `protocol`.
    pub fn new(protocol: &'static str, what: &'static str) -> DecodeError {
        DecodeError { protocol, what }
    }
}

/// Malformed inputs met, per protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct DecodeErrors(BTreeMap<&'static str, u64>);

impl DecodeErrors {
    /// Counts `e` and logs it at debug level.
    pub fn count(&mut self, e: DecodeError) {
        tracing::debug!(error = %e, "decode error");
        *self.0.entry(e.protocol).or_default() += 1;
    }

    /// The count per protocol, by protocol id.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().map(|(&p, &n)| (p, n))
    }

    /// Adds the counts of another shard of the same run.
    pub fn merge(&mut self, o: &DecodeErrors) {
        for (p, n) in o.iter() {
            *self.0.entry(p).or_default() += n;
        }
    }

    /// Whether nothing was malformed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
