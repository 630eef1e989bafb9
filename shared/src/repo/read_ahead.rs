//! Reading on one thread, consuming on another: primary.xml is inflated (and
//! hashed and stored, by the reader underneath) while the previous chunk is
//! parsed, so on two cores the two costs overlap instead of adding up.
//!
//! The consumer sees an ordinary [`Read`]: the source's bytes in order, its
//! read errors where they happened, then end of file. Memory is bounded: at
//! most [`IN_FLIGHT`] chunks wait, one is being filled, one read and
//! [`SPARE`] kept for reuse, [`CHUNK`] bytes each (2 MiB). The reading stops
//! as soon as the consumer lets go of its reader, so a consumer that refuses
//! early (an XML error, a size limit) never makes the source run on.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Bytes handed over at a time: large enough that the hand-over is rare.
const CHUNK: usize = 256 * 1024;
/// Chunks read ahead of the consumer.
const IN_FLIGHT: usize = 4;
/// Spent chunks kept to be filled again.
const SPARE: usize = 2;

/// Runs `consume` on a scoped thread over a reader that yields what this
/// thread reads from `source`, and returns what `consume` returned.
pub fn read_ahead<R, T, F>(mut source: R, consume: F) -> T
where
    R: Read,
    T: Send,
    F: FnOnce(&mut dyn Read) -> T + Send,
{
    let (chunks, received) = sync_channel(IN_FLIGHT);
    // Spent chunks come back to be filled again, so in a steady stream no
    // chunk is allocated (and faulted in) anew.
    let (give_back, spent) = sync_channel(SPARE);
    std::thread::scope(|scope| {
        let consumer = scope.spawn(move || {
            let mut reader = Handed {
                received,
                give_back,
                current: Vec::new(),
                pos: 0,
            };
            consume(&mut reader)
        });
        pump(&mut source, &chunks, &spent);
        drop(chunks);
        match consumer.join() {
            Ok(made) => made,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Reads `source` into chunks until its end, its first error, or the
/// consumer is gone.
fn pump(
    source: &mut impl Read,
    chunks: &SyncSender<io::Result<Vec<u8>>>,
    spent: &Receiver<Vec<u8>>,
) {
    loop {
        let mut buf = spent.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let (n, error) = fill(source, &mut buf);
        buf.truncate(n);
        if n > 0 && chunks.send(Ok(buf)).is_err() {
            return;
        }
        if let Some(e) = error {
            let _ = chunks.send(Err(e));
            return;
        }
        if n < CHUNK {
            return;
        }
    }
}

/// Fills `buf` from `source` as far as it goes: short only at the end of
/// the source or at its first error, which comes with the bytes before it.
fn fill(source: &mut impl Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (filled, Some(e)),
        }
    }
    (filled, None)
}

/// The consumer's end.
struct Handed {
    received: Receiver<io::Result<Vec<u8>>>,
    give_back: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for Handed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.current.len() {
            let spent = std::mem::take(&mut self.current);
            if spent.capacity() > 0 {
                // Full (the reader stopped) or gone: the chunk is just freed.
                let _ = self.give_back.try_send(spent);
            }
            self.pos = 0;
            match self.received.recv() {
                Ok(Ok(chunk)) => self.current = chunk,
                Ok(Err(e)) => return Err(e),
                // The source ended (or failed, reported already).
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    /// Yields `data` in uneven reads, then fails with `error` if given.
    struct Source {
        data: Vec<u8>,
        pos: usize,
        error: Option<io::ErrorKind>,
        reads: usize,
    }

    impl Read for Source {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.reads.is_multiple_of(3) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.pos == self.data.len() {
                return match self.error.take() {
                    Some(kind) => Err(io::Error::new(kind, "corrupt deflate stream")),
                    None => Ok(0),
                };
            }
            let n = buf.len().min(self.data.len() - self.pos).min(7_777);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn source(len: usize, error: Option<io::ErrorKind>) -> Source {
        Source {
            data: (0..len).map(|i| (i * 31 % 251) as u8).collect(),
            pos: 0,
            error,
            reads: 0,
        }
    }

    #[test]
    fn the_consumer_reads_exactly_the_source() {
        for len in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + 12_345,
            20 * CHUNK,
        ] {
            let src = source(len, None);
            let expected = src.data.clone();
            let got = read_ahead(src, |r| {
                let mut all = Vec::new();
                r.read_to_end(&mut all).map(|_| all)
            })
            .unwrap();
            assert!(got == expected, "{len} bytes");
        }
    }

    #[test]
    fn a_source_error_reaches_the_consumer_after_the_bytes_before_it() {
        let src = source(2 * CHUNK + 5, Some(io::ErrorKind::InvalidData));
        let (read, error) = read_ahead(src, |r| {
            let mut all = Vec::new();
            let error = r.read_to_end(&mut all).unwrap_err();
            (all.len(), error)
        });
        assert_eq!(read, 2 * CHUNK + 5);
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(error.to_string(), "corrupt deflate stream");
    }

    #[test]
    fn a_consumer_that_stops_early_stops_the_reading() {
        // An endless source: only the consumer letting go ends this test.
        struct Endless(usize);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0 += buf.len();
                buf.fill(b'x');
                Ok(buf.len())
            }
        }
        let mut endless = Endless(0);
        let first = read_ahead(&mut endless, |r| {
            let mut some = [0u8; 10];
            r.read_exact(&mut some).map(|()| some)
        });
        assert_eq!(first.unwrap(), [b'x'; 10]);
        assert!(
            endless.0 <= (IN_FLIGHT + 2) * CHUNK,
            "read {} bytes",
            endless.0
        );
    }
}
