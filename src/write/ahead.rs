//! Reading ahead of the writer: one thread reads (and casts) tensor bytes while the writing
//! thread writes the blocks it read before, so a conversion costs about the longer of the two,
//! not their sum. Blocks go through a bounded queue and come back to be reused, so memory stays
//! a few blocks whatever the checkpoint's size.

use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

use crate::error::{Error, Result};
use crate::tensor_data::Sink;

/// Blocks in flight between the threads: enough to ride out a slow write or read, few enough
/// to stay in the CPU's cache.
const DEPTH: usize = 4;

/// What the reading thread hands on: a block to write, or where reading failed.
type Block = Result<Vec<u8>>;

/// Runs `produce` on another thread, which hands its emitter consecutive pieces of the output
/// (copied in, or filled in the emitter's own blocks), and `consume` on this one with the same
/// pieces in order. The first error of either
/// side stops both and is returned (the reader's first when both fail, since the writer's is
/// then only a symptom).
pub(crate) fn read_ahead(
    produce: impl FnOnce(&mut Emitter) -> Result<()> + Send,
    mut consume: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let (full_tx, full_rx) = sync_channel::<Block>(DEPTH);
    let (empty_tx, empty_rx) = channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let reading = scope.spawn(move || {
            let mut emitter = Emitter {
                full: &full_tx,
                empty: empty_rx,
                sent: 0,
            };
            if let Err(e) = produce(&mut emitter) {
                // The writer may have stopped (its error is the one to report); else it learns here.
                let _ = full_tx.send(Err(e));
            }
        });
        let written = drain(&full_rx, &empty_tx, &mut consume);
        // A writer that stopped early drops the queue, so the reader's next send fails and it ends.
        drop(full_rx);
        if let Err(panic) = reading.join() {
            std::panic::resume_unwind(panic);
        }
        written
    })
}

/// The writing side: every block in order into `consume`, each given back for reuse.
fn drain(full: &Receiver<Block>, empty: &Sender<Vec<u8>>, consume: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    for block in full {
        let block = block?;
        consume(&block)?;
        let _ = empty.send(block);
    }
    Ok(())
}

/// The reading side's end of the queue: a [`Sink`] that lends the blocks it sends, so they
/// are filled in place.
pub(crate) struct Emitter<'a> {
    full: &'a SyncSender<Block>,
    empty: Receiver<Vec<u8>>,
    sent: u64,
}

impl Emitter<'_> {
    /// Bytes handed on so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }
}

impl Sink<Error> for Emitter<'_> {
    fn put(&mut self, piece: &[u8]) -> Result<()> {
        let mut block = self.empty.try_recv().unwrap_or_default();
        block.clear();
        block.extend_from_slice(piece);
        self.put_lent(block)
    }

    fn lend(&mut self) -> Option<Vec<u8>> {
        Some(self.empty.try_recv().unwrap_or_default())
    }

    fn put_lent(&mut self, block: Vec<u8>) -> Result<()> {
        self.sent += block.len() as u64;
        self.full.send(Ok(block)).map_err(|_| Error::Write {
            path: Default::default(),
            source: std::io::Error::other("the writer stopped"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_arrive_in_order_and_whole() {
        let mut got = Vec::new();
        read_ahead(
            |emit| {
                for i in 0..1000u32 {
                    emit.put(&i.to_le_bytes())?;
                }
                Ok(())
            },
            |piece| {
                got.extend_from_slice(piece);
                Ok(())
            },
        )
        .unwrap();
        let want: Vec<u8> = (0..1000u32).flat_map(u32::to_le_bytes).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_failing_reader_or_writer_stops_both_with_its_error() {
        let unsupported = |what: &str| Error::Unsupported {
            path: "in".into(),
            what: what.into(),
        };
        let r = read_ahead(
            |emit| {
                emit.put(b"a")?;
                Err(unsupported("reader"))
            },
            |_| Ok(()),
        );
        assert!(matches!(r, Err(Error::Unsupported { what, .. }) if what == "reader"));
        // The writer fails at once; the reader, with far more to send, must not block forever.
        let r = read_ahead(
            |emit| {
                for _ in 0..100_000 {
                    emit.put(b"block")?;
                }
                Ok(())
            },
            |_| Err(unsupported("writer")),
        );
        assert!(matches!(r, Err(Error::Unsupported { what, .. }) if what == "writer"));
    }
}
