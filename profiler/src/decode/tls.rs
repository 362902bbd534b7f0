//! TLS record layer (RFC 8446 §5.1): `type(1) || version(2) || length(2) || fragment`.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::framing::Framer;

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
