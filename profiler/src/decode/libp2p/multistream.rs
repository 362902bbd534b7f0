//! multistream-select 1.0 messages: `uvarint(len) || text || '\n'`, len counting the newline
//! (protocols.md §1.1).

use crate::decode::uvarint;

/// The protocol's own id, sent first by both ends.
pub const HEADER: &[u8] = b"/multistream/1.0.0";
/// The header as it appears on the wire: `\x13/multistream/1.0.0\n`.
pub const HEADER_WIRE: &[u8] = b"\x13/multistream/1.0.0\n";
/// A responder's refusal of a proposal.
pub const NA: &[u8] = b"na";
/// Longest message accepted (nim-libp2p's `MsgSize`); anything longer is not multistream.
pub const MAX_LEN: u64 = 1024;

/// One parsed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The text without its trailing newline (a protocol id, `na` or `ls`).
    pub text: &'a [u8],
    /// Bytes the message took on the wire, prefix included.
    pub wire_len: usize,
}

/// The outcome of parsing the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    Message(Message<'a>),
    /// A valid start; more bytes are needed.
    Incomplete,
    /// These bytes are not a multistream message.
    Invalid,
}

/// Parses the message at the front of `buf`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    let Some((len, used)) = uvarint(buf) else {
        return if buf.len() < 2 && buf.first().is_none_or(|b| b & 0x80 != 0) {
            Parsed::Incomplete
        } else {
            Parsed::Invalid
        };
    };
    if !(2..=MAX_LEN).contains(&len) {
        return Parsed::Invalid;
    }
    // 2 ≤ len ≤ MAX_LEN: neither the sum nor `len - 1` below can wrap.
    let end = used + len as usize;
    let body = &buf[used..buf.len().min(end)];
    if !body
        .iter()
        .take(len as usize - 1)
        .all(|&b| (0x20..0x7f).contains(&b))
    {
        return Parsed::Invalid;
    }
    if body.len() < len as usize {
        return Parsed::Incomplete;
    }
    if body[len as usize - 1] != b'\n' {
        return Parsed::Invalid;
    }
    Parsed::Message(Message {
        text: &body[..len as usize - 1],
        wire_len: end,
    })
}

/// Whether `first` is (a prefix of) the multistream header: `Some(true)` complete, `Some(false)`
/// possible but short, `None` not multistream.
pub fn starts_with_header(first: &[u8]) -> Option<bool> {
    let n = first.len().min(HEADER_WIRE.len());
    (first[..n] == HEADER_WIRE[..n]).then_some(n == HEADER_WIRE.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/multistream/1.0.0\n` then `/noise\n`, as a dialer sends them.
    const DIAL: &[u8] = b"\x13/multistream/1.0.0\n\x07/noise\n";

    #[test]
    fn parses_header_and_proposal() {
        let Parsed::Message(m) = parse(DIAL) else {
            panic!("header not parsed")
        };
        assert_eq!((m.text, m.wire_len), (HEADER, 20));
        let Parsed::Message(m) = parse(&DIAL[20..]) else {
            panic!("proposal not parsed")
        };
        assert_eq!((m.text, m.wire_len), (&b"/noise"[..], 8));
    }

    #[test]
    fn every_truncation_is_incomplete() {
        for len in 0..20 {
            assert_eq!(parse(&DIAL[..len]), Parsed::Incomplete, "len {len}");
        }
    }

    #[test]
    fn noise_and_tls_bytes_are_not_messages() {
        assert_eq!(parse(&[0x00, 0x20, 1, 2]), Parsed::Invalid);
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0x02]), Parsed::Invalid);
        assert_eq!(parse(b"\x03na!"), Parsed::Invalid);
    }

    #[test]
    fn header_prefix() {
        assert_eq!(starts_with_header(&DIAL[..5]), Some(false));
        assert_eq!(starts_with_header(DIAL), Some(true));
        assert_eq!(starts_with_header(b"GET / HTTP/1.1"), None);
    }
}
