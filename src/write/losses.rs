//! Writing a cast output while counting what the cast loses, so the output is renamed into
//! place only if the loss is allowed. Where the write streams each tensor once (one
//! safetensors file), the count is taken from the blocks the cast converts, in the same pass:
//! a separate count read the whole input a second time, on the cores the write was using
//! (the bf16 cast took 1.2-1.3x `cp` with it, 1.06x without). Other outputs count beside the
//! write ([`write_gated`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::{streams_each_tensor_once, write_checked, write_gated, WriteOptions, WriteReport};
use crate::elem::{self, Losses};
use crate::error::Error;
use crate::model::Checkpoint;
use crate::tensor_data::CastWatch;

/// Writes `ckpt` to `out` and hands `judge` what its pending casts lose: per tensor that loses
/// something, in tensor order, as [`crate::transform::try_loss_report`] counts it (which runs
/// on up to `threads` threads beside the write where the count cannot be taken in the pass).
/// The output is renamed into place only if `judge` returns Ok; else its error is returned and
/// nothing is left.
pub fn write_judging_losses<E>(
    ckpt: &Checkpoint,
    out: &Path,
    opts: &WriteOptions,
    threads: usize,
    judge: impl FnOnce(&[(String, Losses)]) -> std::result::Result<(), E> + Send,
) -> std::result::Result<WriteReport, E>
where
    E: From<Error> + Send,
{
    if !streams_each_tensor_once(out, opts) {
        return write_gated(ckpt, out, opts, || judge(&crate::transform::try_loss_report(ckpt, threads)?));
    }
    let tally: Arc<Mutex<HashMap<String, Losses>>> = Arc::default();
    let counting = Arc::clone(&tally);
    let watch: CastWatch = Arc::new(move |name, cast, src, out| {
        let lost = elem::losses_of_output(cast.from, cast.to, src, out);
        if lost != Losses::default() {
            let mut tally = counting.lock().unwrap_or_else(PoisonError::into_inner);
            let sum = tally.entry(name.to_owned()).or_default();
            sum.overflow += lost.overflow;
            sum.underflow += lost.underflow;
        }
    });
    write_checked(ckpt, out, opts, Some(watch), || {
        let tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
        let losses: Vec<(String, Losses)> = ckpt
            .tensors
            .iter()
            .filter_map(|t| tally.get(&t.name).map(|&l| (t.name.clone(), l)))
            .collect();
        judge(&losses)
    })
}
