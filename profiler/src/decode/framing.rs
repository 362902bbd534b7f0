//! Length-prefixed frames fed in arbitrary chunks: the walker Noise and TLS share.

/// Walks a stream of length-prefixed frames fed in arbitrary chunks, reporting where frames start.
/// Shared by Noise (2-byte prefix) and TLS (5-byte record header).
#[derive(Clone, Debug)]
pub struct Framer<const H: usize> {
    header: [u8; H],
    have: usize,
    /// Body bytes of the current frame still to come.
    body_left: u64,
}

/// A piece of a chunk: `len` bytes that belong to the frame whose header is `header`; `starts`
/// when the frame begins in this piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece<'a, const H: usize> {
    pub len: usize,
    pub header: [u8; H],
    pub starts: bool,
    /// The body bytes of this piece (its last bytes; the header bytes come before them).
    pub body: &'a [u8],
}

impl<const H: usize> Default for Framer<H> {
    fn default() -> Self {
        Framer {
            header: [0; H],
            have: 0,
            body_left: 0,
        }
    }
}

impl<const H: usize> Framer<H> {
    /// Splits `chunk` into pieces of consecutive frames. `body_len` reads a frame's body length
    /// from its header. Bytes of a header still incomplete at the end are held back and
    /// reported with the piece that completes it, so every piece knows its frame's header.
    pub fn feed(
        &mut self,
        mut chunk: &[u8],
        body_len: impl Fn(&[u8; H]) -> u64,
        mut piece: impl FnMut(Piece<'_, H>),
    ) {
        while !chunk.is_empty() {
            if self.body_left > 0 {
                let n = chunk.len().min(self.body_left as usize);
                self.body_left -= n as u64;
                let body = &chunk[..n];
                chunk = &chunk[n..];
                piece(Piece {
                    len: n,
                    header: self.header,
                    starts: false,
                    body,
                });
                continue;
            }
            let held = self.have;
            let take = (H - self.have).min(chunk.len());
            self.header[self.have..self.have + take].copy_from_slice(&chunk[..take]);
            self.have += take;
            chunk = &chunk[take..];
            if self.have < H {
                return;
            }
            self.have = 0;
            self.body_left = body_len(&self.header);
            let n = chunk.len().min(self.body_left as usize);
            self.body_left -= n as u64;
            let body = &chunk[..n];
            chunk = &chunk[n..];
            piece(Piece {
                len: held + take + n,
                header: self.header,
                starts: true,
                body,
            });
        }
    }

    /// Header bytes received but not yet reported (a frame header split across chunks).
    pub fn held(&self) -> usize {
        self.have
    }
}
