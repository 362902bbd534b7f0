//! TLS record layer (RFC 8446 §5.1): `type(1) || version(2) || length(2) || fragment`, and the
//! server name (SNI) of a ClientHello (RFC 8446 §4.1.2, RFC 6066 §3).

use crate::account::record::Category;
use crate::decode::error::DecodeError;
use crate::decode::frames::FrameEvent;
use crate::decode::framing::Framer;
use crate::decode::libp2p::encrypted::Inference;
use crate::decode::libp2p::security::Security;
use crate::decode::{Conn, DecodeCtx, LabelId, LabelTable, Side};

/// The protocol id multistream-select names for libp2p's TLS 1.3 (protocols.md §1.5).
pub const ID: &[u8] = b"/tls/1.0.0";

/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 5;
/// Record type of handshake messages (ClientHello, ServerHello, …).
pub const HANDSHAKE: u8 = 22;
/// Record type of ChangeCipherSpec, sent in TLS 1.3 only for middlebox compatibility.
pub const CHANGE_CIPHER_SPEC: u8 = 20;
/// Record type of alerts.
pub const ALERT: u8 = 21;
/// Record type of encrypted data (in TLS 1.3 also the encrypted part of the handshake).
pub const APPLICATION_DATA: u8 = 23;

/// Body length of a record from its header.
pub fn body_len(header: &[u8; RECORD_HEADER_LEN]) -> u64 {
    u64::from(u16::from_be_bytes([header[3], header[4]]))
}

/// Whether a record type is cleartext handshake signalling rather than protected data.
pub fn is_handshake_type(record_type: u8) -> bool {
    matches!(record_type, HANDSHAKE | CHANGE_CIPHER_SPEC | ALERT)
}

/// The name of a record type in the frames table.
pub fn record_type_name(record_type: u8) -> &'static str {
    match record_type {
        HANDSHAKE => "handshake",
        CHANGE_CIPHER_SPEC => "change-cipher-spec",
        ALERT => "alert",
        APPLICATION_DATA => "application-data",
        _ => "unknown",
    }
}

/// Labels the records in `bytes` as they pass: cleartext handshake signalling gets `handshake`,
/// protected records `after`; each record is one unit.
pub fn feed_records(
    framer: &mut Framer<RECORD_HEADER_LEN>,
    bytes: &[u8],
    (handshake, after): (LabelId, LabelId),
    side: Side,
    ctx: &mut DecodeCtx<'_>,
) {
    framer.feed(bytes, body_len, |p| {
        let label = if is_handshake_type(p.header[0]) {
            handshake
        } else {
            after
        };
        ctx.emit(side, p.len as u64, label, u32::from(p.starts));
    });
}

/// Application data records a client sends to finish a libp2p TLS 1.3 handshake (mutual
/// authentication): its Certificate, CertificateVerify and Finished, one record each (rustls,
/// OpenSSL, Go). The server's are those it sends before the client's Finished (its first flight,
/// where Go also puts its session ticket), then up to [`TICKETS`] session tickets of one size
/// (rustls and OpenSSL send two after the client's Finished).
const CLIENT_RECORDS: u32 = 3;
const TICKETS: u32 = 2;
/// A NewSessionTicket's plaintext is at least this long (lifetime, age_add, nonce and a ticket);
/// a muxer's first frame after the handshake is shorter (yamux: a 12-byte window update).
const TICKET_MIN: u64 = 64;

/// Where the encrypted handshake of one connection stands.
#[derive(Debug)]
pub struct Handshake {
    /// Application data records the client sends to finish its handshake.
    client_records: u32,
    /// Application data records seen per side.
    protected: [u32; 2],
    /// Session tickets taken after the client's Finished, and the record size of the first.
    tickets: u32,
    ticket: Option<u64>,
    /// The server sent a record that is not part of the handshake.
    server_done: bool,
}

impl Handshake {
    /// The handshake of a connection whose client finishes with `client_records` application
    /// data records: 3 with a certificate of its own (libp2p), 1 without (HTTPS, wss).
    pub fn new(client_records: u32) -> Handshake {
        Handshake {
            client_records,
            protected: [0; 2],
            tickets: 0,
            ticket: None,
            server_done: false,
        }
    }

    /// Whether an application data record of `body` bytes from `side` is part of the handshake.
    pub fn takes(&mut self, side: Side, body: u64) -> bool {
        let i = side.index();
        self.protected[i] += 1;
        match side {
            Side::Initiator => self.protected[i] <= self.client_records,
            Side::Responder if self.server_done => false,
            Side::Responder if self.protected[0] < self.client_records => true,
            Side::Responder => {
                let ticket = self.tickets < TICKETS
                    && body >= TICKET_MIN + TAG_AND_TYPE
                    && self.ticket.is_none_or(|t| t == body);
                if ticket {
                    self.tickets += 1;
                    self.ticket = Some(body);
                } else {
                    self.server_done = true;
                }
                ticket
            }
        }
    }
}

/// The tag and inner content type after a TLS 1.3 record's plaintext.
pub const TAG_AND_TYPE: u64 = 17;

/// The TLS records of one libp2p connection: cleartext handshake records and the encrypted
/// handshake are `handshake`, the others are labelled by [`Inference`], told the muxer the
/// client offers first in ALPN.
pub struct TlsLayer {
    conn: Conn,
    framers: [Framer<RECORD_HEADER_LEN>; 2],
    handshake_state: Handshake,
    /// Per side, whether the record in progress belongs to the handshake.
    in_handshake: [bool; 2],
    /// The client's first bytes were read for ALPN.
    hello_read: bool,
    handshake: LabelId,
    inference: Option<Inference>,
}

impl TlsLayer {
    /// The layer of connection `conn`.
    pub fn new(conn: Conn, labels: &mut LabelTable) -> TlsLayer {
        TlsLayer {
            conn,
            framers: Default::default(),
            handshake_state: Handshake::new(CLIENT_RECORDS),
            in_handshake: [true; 2],
            hello_read: false,
            handshake: labels.decoded(Category::Libp2p, "/tls/1.0.0", "handshake"),
            inference: None,
        }
    }
}

impl Security for TlsLayer {
    fn data<'b>(
        &mut self,
        side: Side,
        bytes: &'b [u8],
        ctx: &mut DecodeCtx<'_>,
    ) -> Result<Option<&'b [u8]>, (DecodeError, u64)> {
        let i = side.index();
        let (conn, handshake) = (self.conn, self.handshake);
        let state = &mut self.handshake_state;
        let in_handshake = &mut self.in_handshake[i];
        let inference = self
            .inference
            .get_or_insert_with(|| Inference::tls(conn, ctx.labels));
        if side == Side::Initiator && !std::mem::replace(&mut self.hello_read, true) {
            let muxer = alpn(bytes)
                .into_iter()
                .find(|p| super::muxer::framer(p).is_some());
            if let Some(id) = muxer {
                inference.name_muxer(id, ctx.labels);
            }
        }
        self.framers[i].feed(bytes, body_len, |p| {
            let record_type = p.header[0];
            let body = body_len(&p.header);
            let data = record_type == APPLICATION_DATA;
            if p.starts {
                *in_handshake = !data || state.takes(side, body);
            }
            if *in_handshake {
                if p.starts {
                    log_record(ctx, side, body, record_type_name(record_type));
                }
                ctx.emit(side, p.len as u64, handshake, u32::from(p.starts));
                return;
            }
            if p.starts {
                let guess = inference.start(side, body, ctx);
                log_record(ctx, side, body, guess.as_str());
            }
            inference.consume(side, p.len as u64, ctx);
        });
        Ok(None)
    }

    fn held(&self, side: Side) -> usize {
        self.framers[side.index()].held()
    }
}

/// Puts a record of `body` bytes, taken for `kind`, in the frames table.
fn log_record(ctx: &mut DecodeCtx<'_>, side: Side, body: u64, kind: &'static str) {
    ctx.frames.push(FrameEvent {
        side,
        time_ns: ctx.now_ns,
        security: "/tls/1.0.0",
        bytes: (RECORD_HEADER_LEN as u64 + body) as u32,
        kind,
    });
}

/// What the first record of a client says: not TLS, not complete yet, or a ClientHello with the
/// server name it asks for (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    NotTls,
    Incomplete,
    ClientHello(Option<String>),
}

/// Reads the ClientHello in the first record of `first` (a client's first bytes).
pub fn client_hello(first: &[u8]) -> Hello {
    let Some(header) = first.get(..RECORD_HEADER_LEN) else {
        let prefix_ok =
            first.first().is_none_or(|&t| t == HANDSHAKE) && first.get(1).is_none_or(|&v| v == 3);
        return if prefix_ok {
            Hello::Incomplete
        } else {
            Hello::NotTls
        };
    };
    if header[0] != HANDSHAKE || header[1] != 3 || header[2] > 4 {
        return Hello::NotTls;
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let Some(body) = first.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
        return Hello::Incomplete;
    };
    if body.first() != Some(&1) {
        return Hello::NotTls;
    }
    Hello::ClientHello(server_name(body))
}

/// The host_name of the server_name extension of a ClientHello handshake message.
fn server_name(msg: &[u8]) -> Option<String> {
    let mut names = Reader(extension(msg, 0)?);
    let list = names.u16()?;
    let mut list = Reader(names.take(usize::from(list))?);
    while let (Some(name_type), Some(n)) = (list.u8(), list.u16()) {
        let name = list.take(usize::from(n))?;
        if name_type == 0 {
            return std::str::from_utf8(name)
                .ok()
                .map(|s| s.to_ascii_lowercase());
        }
    }
    None
}

/// The protocols a client offers in ALPN (RFC 7301), in its order of preference, read from its
/// first bytes (a ClientHello record); none when they hold no complete ClientHello.
pub fn alpn(first: &[u8]) -> Vec<&[u8]> {
    let msg = first
        .get(..RECORD_HEADER_LEN)
        .filter(|h| h[0] == HANDSHAKE)
        .and_then(|h| {
            first.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + body_len(&h.try_into().ok()?) as usize)
        })
        .filter(|m| m.first() == Some(&1));
    let Some(mut r) = msg.and_then(|m| extension(m, 16)).map(Reader) else {
        return Vec::new();
    };
    let mut list = match r.u16().and_then(|n| r.take(usize::from(n))) {
        Some(l) => Reader(l),
        None => return Vec::new(),
    };
    let mut out = Vec::new();
    while let Some(p) = list.u8().and_then(|n| list.take(usize::from(n))) {
        out.push(p);
    }
    out
}

/// The data of extension `kind` of a ClientHello handshake message.
fn extension(msg: &[u8], kind: u16) -> Option<&[u8]> {
    let mut r = Reader(msg.get(4..)?);
    r.take(2 + 32)?;
    let session = r.u8()?;
    r.take(usize::from(session))?;
    let suites = r.u16()?;
    r.take(usize::from(suites))?;
    let compression = r.u8()?;
    r.take(usize::from(compression))?;
    let ext_len = r.u16()?;
    let mut exts = Reader(r.take(usize::from(ext_len))?);
    while let (Some(k), Some(len)) = (exts.u16(), exts.u16()) {
        let data = exts.take(usize::from(len))?;
        if k == kind {
            return Some(data);
        }
    }
    None
}

/// A cursor over bytes that fails softly when they run out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record naming `sni`, laid out as RFC 8446 §4.1.2 says.
    fn hello(sni: &str) -> Vec<u8> {
        let name = sni.as_bytes();
        let n = u16::try_from(name.len()).expect("name");
        let mut sni_ext = Vec::new();
        sni_ext.extend_from_slice(&(n + 3).to_be_bytes());
        sni_ext.push(0);
        sni_ext.extend_from_slice(&n.to_be_bytes());
        sni_ext.extend_from_slice(name);
        let mut exts = vec![0, 10, 0, 2, 0, 29];
        exts.extend_from_slice(&[0, 0]);
        exts.extend_from_slice(&u16::try_from(sni_ext.len()).expect("ext").to_be_bytes());
        exts.extend_from_slice(&sni_ext);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&u16::try_from(exts.len()).expect("exts").to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![1, 0];
        msg.extend_from_slice(&u16::try_from(body.len()).expect("body").to_be_bytes());
        msg.extend_from_slice(&body);
        let mut rec = vec![HANDSHAKE, 3, 1];
        rec.extend_from_slice(&u16::try_from(msg.len()).expect("msg").to_be_bytes());
        rec.extend_from_slice(&msg);
        rec
    }

    #[test]
    fn the_server_name_is_read_from_any_complete_hello() {
        let rec = hello("Mainnet.Infura.io");
        assert_eq!(
            client_hello(&rec),
            Hello::ClientHello(Some("mainnet.infura.io".into()))
        );
        for cut in 0..rec.len() {
            assert_eq!(client_hello(&rec[..cut]), Hello::Incomplete, "cut {cut}");
        }
        assert_eq!(client_hello(b"GET / HTTP/1.1"), Hello::NotTls);
        let mut broken = rec.clone();
        broken[60] = 0xff;
        assert!(matches!(client_hello(&broken), Hello::ClientHello(_)));
    }

    /// A record of `record_type` with a body of `body` bytes.
    fn record(record_type: u8, body: usize) -> Vec<u8> {
        let mut r = vec![record_type, 3, 3];
        r.extend_from_slice(&u16::try_from(body).expect("body").to_be_bytes());
        r.resize(RECORD_HEADER_LEN + body, 0xaa);
        r
    }

    /// A TLS layer of a loopback connection.
    fn loopback_layer(t: &mut crate::decode::TestCtx) -> TlsLayer {
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let conn = Conn {
            initiator: (ip, 40000),
            responder: (ip, 60000),
        };
        TlsLayer::new(conn, &mut t.labels)
    }

    #[test]
    fn the_encrypted_handshake_then_inferred_records() {
        let mut t = crate::decode::TestCtx::default();
        let mut layer = loopback_layer(&mut t);
        let trailer = 17;
        let mut wire = record(HANDSHAKE, 200);
        for _ in 0..3 {
            wire.extend(record(APPLICATION_DATA, 300));
        }
        // The muxer's multistream header, identify, the first relay RPC (subscriptions), then
        // a yamux frame with a 500-byte RPC.
        wire.extend(record(APPLICATION_DATA, 20 + trailer));
        wire.extend(record(APPLICATION_DATA, 12 + 400 + trailer));
        wire.extend(record(APPLICATION_DATA, 12 + 45 + trailer));
        wire.extend(record(APPLICATION_DATA, 12 + 500 + trailer));
        for chunk in wire.chunks(7) {
            let rest = layer.data(Side::Initiator, chunk, &mut t.ctx());
            assert!(matches!(rest, Ok(None)));
        }
        assert_eq!(
            t.spans.iter().map(|s| s.len).sum::<u64>(),
            wire.len() as u64,
            "every byte once"
        );
        let kind_bytes = |kind: &str| -> u64 {
            t.spans
                .iter()
                .filter(|s| t.labels.get(s.label).kind.as_ref() == kind)
                .map(|s| s.len)
                .sum()
        };
        assert_eq!(kind_bytes("handshake"), 5 + 200 + 3 * (5 + 300));
        assert_eq!(kind_bytes("negotiation"), 5 + 20 + trailer as u64);
        assert_eq!(kind_bytes("data"), 5 + 12 + 400 + trailer as u64);
        assert_eq!(kind_bytes("message"), 5 + 12 + 500 + trailer as u64 - 2);
    }

    /// The server's records before the client's Finished, and then two session tickets of one
    /// size, are the handshake; the yamux frames after them are inferred.
    #[test]
    fn session_tickets_after_the_clients_finished() {
        let mut t = crate::decode::TestCtx::default();
        let mut layer = loopback_layer(&mut t);
        let mut feed = |side, wire: Vec<u8>| {
            let rest = layer.data(side, &wire, &mut t.ctx());
            assert!(matches!(rest, Ok(None)));
        };
        feed(Side::Initiator, hello("peer"));
        let mut flight = record(HANDSHAKE, 122);
        for body in [42, 62, 409, 96, 69] {
            flight.extend(record(APPLICATION_DATA, body));
        }
        feed(Side::Responder, flight);
        let client: Vec<u8> = [410, 96, 69, 29]
            .into_iter()
            .flat_map(|b| record(APPLICATION_DATA, b))
            .collect();
        feed(Side::Initiator, client);
        let server: Vec<u8> = [650, 650, 29, 558]
            .into_iter()
            .flat_map(|b| record(APPLICATION_DATA, b))
            .collect();
        feed(Side::Responder, server);
        let handshake: u64 = t
            .spans
            .iter()
            .filter(|s| t.labels.get(s.label).kind.as_ref() == "handshake")
            .map(|s| s.len)
            .sum();
        let records = |bodies: &[u64]| bodies.iter().map(|b| 5 + b).sum::<u64>();
        let hello_len = hello("peer").len() as u64;
        assert_eq!(
            handshake,
            hello_len + records(&[122, 42, 62, 409, 96, 69, 410, 96, 69, 650, 650])
        );
    }

    #[test]
    fn alpn_lists_the_offered_protocols_in_order() {
        let mut rec = hello("x");
        // Append an ALPN extension (16) offering yamux, then libp2p.
        let list: Vec<u8> = [&b"/yamux/1.0.0"[..], b"libp2p"]
            .iter()
            .flat_map(|p| std::iter::once(p.len() as u8).chain(p.iter().copied()))
            .collect();
        let mut ext = vec![0, 16];
        ext.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend_from_slice(&list);
        let grow = |at: usize, rec: &mut Vec<u8>, by: usize| {
            let v = u16::from_be_bytes([rec[at], rec[at + 1]]) as usize + by;
            rec[at..at + 2].copy_from_slice(&(v as u16).to_be_bytes());
        };
        // Record length, handshake length (low two of three bytes), extensions length.
        grow(3, &mut rec, ext.len());
        grow(7, &mut rec, ext.len());
        let ext_len_at = 5 + 4 + 2 + 32 + 1 + 2 + 2 + 2;
        grow(ext_len_at, &mut rec, ext.len());
        rec.extend_from_slice(&ext);
        assert_eq!(alpn(&rec), vec![&b"/yamux/1.0.0"[..], b"libp2p"]);
        assert_eq!(client_hello(&rec), Hello::ClientHello(Some("x".into())));
        assert!(alpn(&rec[..20]).is_empty());
    }

    #[test]
    fn records_split_anywhere() {
        let stream = [22, 3, 1, 0, 2, 9, 9, 23, 3, 3, 0, 1, 7];
        for cut in 0..stream.len() {
            let mut f = Framer::<RECORD_HEADER_LEN>::default();
            let mut types = Vec::new();
            let mut total = 0;
            for c in [&stream[..cut], &stream[cut..]] {
                f.feed(c, body_len, |p| {
                    total += p.len;
                    if p.starts {
                        types.push(p.header[0]);
                    }
                });
            }
            assert_eq!((types, total), (vec![22, 23], stream.len()), "cut {cut}");
        }
    }
}
