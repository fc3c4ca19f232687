//! A tensor's elements as PyTorch's `t.contiguous()` would hold them: row-major, little-endian,
//! streamed in bounded chunks so no tensor is ever held whole in memory.

use crate::model::{ByteOrder, Checkpoint, Tensor};

/// Bytes handed to the consumer at a time, at most.
const CHUNK: usize = 4 << 20;

/// Calls `sink` with consecutive pieces of the tensor's C-contiguous little-endian bytes.
/// The reader proved the view lies inside its storage, so every index here is in range.
pub fn for_each_chunk<E>(ckpt: &Checkpoint, tensor: &Tensor, mut sink: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
    let storage = ckpt.storage(tensor.storage);
    let data = storage.data.bytes();
    let esize = tensor.dtype.size();
    let swap = storage.byte_order == ByteOrder::Big && tensor.dtype.swap_unit() > 1;
    let numel = tensor.numel();
    if numel == 0 {
        return Ok(());
    }
    let start = (tensor.offset as usize) * esize;
    if tensor.is_contiguous() && !swap {
        let bytes = &data[start..start + numel as usize * esize];
        for piece in bytes.chunks(CHUNK) {
            sink(piece)?;
        }
        return Ok(());
    }
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK.min(numel as usize * esize));
    let ndim = tensor.shape.len();
    // Runs along the last dimension are contiguous in the source when its stride is 1.
    let (run_len, run_stride) = match ndim {
        0 => (1usize, 1u64),
        _ => (tensor.shape[ndim - 1] as usize, tensor.stride[ndim - 1]),
    };
    let outer_dims = ndim.saturating_sub(1);
    let mut index = vec![0u64; outer_dims];
    loop {
        let mut base = tensor.offset;
        for d in 0..outer_dims {
            base += index[d] * tensor.stride[d];
        }
        if run_stride == 1 || run_len == 1 {
            let from = base as usize * esize;
            push_elements(&mut buf, &data[from..from + run_len * esize], esize, tensor.dtype.swap_unit(), swap);
        } else {
            for i in 0..run_len as u64 {
                let from = (base + i * run_stride) as usize * esize;
                push_elements(&mut buf, &data[from..from + esize], esize, tensor.dtype.swap_unit(), swap);
            }
        }
        if buf.len() >= CHUNK {
            sink(&buf)?;
            buf.clear();
        }
        // Advance the outer index, last dimension fastest.
        let mut d = outer_dims;
        loop {
            if d == 0 {
                if !buf.is_empty() {
                    sink(&buf)?;
                }
                return Ok(());
            }
            d -= 1;
            index[d] += 1;
            if index[d] < tensor.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

fn push_elements(buf: &mut Vec<u8>, bytes: &[u8], esize: usize, unit: usize, swap: bool) {
    if !swap {
        buf.extend_from_slice(bytes);
        return;
    }
    debug_assert!(esize % unit == 0);
    for u in bytes.chunks_exact(unit) {
        buf.extend(u.iter().rev());
    }
}

/// SHA-256 of the tensor's contiguous little-endian bytes, hex.
pub fn sha256_hex(ckpt: &Checkpoint, tensor: &Tensor) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let _ = for_each_chunk::<std::convert::Infallible>(ckpt, tensor, |b| {
        h.update(b);
        Ok(())
    });
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
