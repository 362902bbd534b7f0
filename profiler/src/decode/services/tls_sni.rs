//! TLS connections that are not libp2p, named by the server name of their ClientHello: RPC
//! providers (`rpc` / `tls:<sni>`), DNS-over-HTTPS resolvers (`other` / `doh`), the Status
//! telemetry service (`other` / `telemetry`), anything else `other` / `tls`; libp2p over wss is
//! told apart by its record sizes ([`wss`]). Records are units:
//! kind `handshake` for cleartext handshake records, `data` for protected ones.

use crate::account::record::Category;
use crate::decode::framing::Framer;
use crate::decode::libp2p::tls::{self, Hello, RECORD_HEADER_LEN};
use crate::decode::libp2p::wss;
use crate::decode::{Conn, DecodeCtx, LabelId, Probe, Side, StreamDecoder, StreamProbe};
use crate::rules::{Rules, in_any};

/// Longest first flight held while the ClientHello is incomplete (one record at most).
const MAX_HELLO: usize = RECORD_HEADER_LEN + (1 << 14) + 256;

/// Recognises a TLS client by its first record.
pub struct TlsProbe;

impl StreamProbe for TlsProbe {
    fn probe(&self, side: Side, first: &[u8], conn: &Conn, ctx: &mut DecodeCtx<'_>) -> Probe {
        if side != Side::Initiator {
            return Probe::No;
        }
        match tls::client_hello(first) {
            Hello::NotTls => Probe::No,
            // One byte of 0x16 is no evidence yet: wait for the whole record header.
            Hello::Incomplete if first.len() < RECORD_HEADER_LEN => Probe::NeedMore,
            Hello::Incomplete | Hello::ClientHello(_) => {
                let unnamed = labels_for(None, ctx);
                let tls = Box::new(TlsConn {
                    held: Vec::new(),
                    named: None,
                    unnamed,
                    framers: [Framer::default(), Framer::default()],
                });
                Probe::Yes(Box::new(wss::Detect::new(*conn, tls)))
            }
        }
    }
}

/// The (category, protocol) a server name gets under `rules`.
pub fn service(sni: Option<&str>, rules: &Rules) -> (Category, String) {
    match sni {
        Some(name) if in_any(name, &rules.rpc.providers) => (Category::Rpc, format!("tls:{name}")),
        Some(name) if in_any(name, &rules.other.doh_resolvers) => (Category::Other, "doh".into()),
        Some(name) if in_any(name, &rules.other.telemetry_hosts) => {
            (Category::Other, "telemetry".into())
        }
        _ => (Category::Other, "tls".into()),
    }
}

/// The (handshake, data) labels of a connection to `sni`.
fn labels_for(sni: Option<&str>, ctx: &mut DecodeCtx<'_>) -> (LabelId, LabelId) {
    let (category, protocol) = service(sni, ctx.rules);
    (
        ctx.labels.decoded(category, &protocol, "handshake"),
        ctx.labels.decoded(category, &protocol, "data"),
    )
}

/// A TLS connection: the client's first bytes are held until its ClientHello names the server.
struct TlsConn {
    held: Vec<u8>,
    named: Option<(LabelId, LabelId)>,
    /// The labels while (or if) no name is known.
    unnamed: (LabelId, LabelId),
    framers: [Framer<RECORD_HEADER_LEN>; 2],
}

impl TlsConn {
    fn labels(&self) -> (LabelId, LabelId) {
        self.named.unwrap_or(self.unnamed)
    }
}

impl StreamDecoder for TlsConn {
    fn heap_bytes(&self) -> usize {
        self.held.capacity()
    }

    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        if self.named.is_none() && side == Side::Initiator {
            self.held.extend_from_slice(bytes);
            let sni = match tls::client_hello(&self.held) {
                Hello::Incomplete if self.held.len() < MAX_HELLO => return,
                Hello::ClientHello(sni) => sni,
                Hello::Incomplete | Hello::NotTls => None,
            };
            self.named = Some(labels_for(sni.as_deref(), ctx));
            let held = std::mem::take(&mut self.held);
            let pair = self.labels();
            tls::feed_records(&mut self.framers[0], &held, pair, side, ctx);
            return;
        }
        let pair = self.labels();
        tls::feed_records(&mut self.framers[side.index()], bytes, pair, side, ctx);
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        if self.named.is_none() && side == Side::Initiator {
            self.named = Some(self.unnamed);
            let held = std::mem::take(&mut self.held);
            ctx.emit(side, held.len() as u64, self.unnamed.0, 0);
        }
        self.framers[side.index()] = Framer::default();
        ctx.emit(side, len, self.labels().1, 0);
    }

    fn connection_label(&self) -> LabelId {
        self.labels().1
    }

    fn settled(&self, _side: Side) -> Option<LabelId> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TestCtx;

    fn probe(first: &[u8]) -> &'static str {
        let mut t = TestCtx::default();
        let conn = Conn {
            initiator: ("10.0.0.1".parse().unwrap(), 40000),
            responder: ("10.0.0.2".parse().unwrap(), 443),
        };
        match TlsProbe.probe(Side::Initiator, first, &conn, &mut t.ctx()) {
            Probe::No => "no",
            Probe::NeedMore => "more",
            Probe::Yes(_) => "yes",
        }
    }

    #[test]
    fn a_connection_is_tls_only_once_a_record_header_says_so() {
        assert_eq!(probe(&[0x16]), "more");
        assert_eq!(probe(&[0x16, 3, 1, 0]), "more");
        assert_eq!(probe(&[0x16, 3, 1, 0, 200]), "yes");
        assert_eq!(probe(&[0x16, 9]), "no");
        assert_eq!(probe(b"GET / HTTP/1.1"), "no");
    }
}
