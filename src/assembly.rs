//! A tensor whose bytes are spread over several inputs: the global tensor of a distributed
//! checkpoint, each chunk (a box of the global tensor, row-major in its own file range) saved by
//! one rank. An [`Assembly`] maps any byte range of the global tensor's row-major bytes to runs
//! of the chunks' file ranges, so the readers and writers that stream a storage stream it
//! unchanged, a bounded block at a time, without the tensor ever being whole in memory.
//!
//! A run is as long as the layout allows: a chunk of whole rows (Shard(0)) is one run, a chunk
//! of columns (Shard(1)) gives one run per row.

use crate::model::DataRef;

/// One chunk: the box `offsets .. offsets + sizes` of the global tensor, whose elements lie
/// row-major and densely in `data`.
#[derive(Debug, Clone)]
pub struct Piece {
    pub offsets: Vec<u64>,
    pub sizes: Vec<u64>,
    pub data: DataRef,
}

/// A global tensor (row-major, `esize`-byte elements) tiled exactly by its pieces.
#[derive(Debug)]
pub struct Assembly {
    shape: Vec<u64>,
    esize: u64,
    pieces: Vec<Piece>,
}

/// Up to this many pieces, tiling is checked pair by pair; beyond, by walking every run.
const PAIRWISE_LIMIT: usize = 2048;

/// Whether two boxes share an element.
fn boxes_meet(a: &Piece, b: &Piece) -> bool {
    a.offsets
        .iter()
        .zip(&a.sizes)
        .zip(b.offsets.iter().zip(&b.sizes))
        .all(|((&ao, &asz), (&bo, &bsz))| ao < bo + bsz && bo < ao + asz)
}

/// One stretch of the global bytes that lies in one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Index into [`Assembly::pieces`].
    pub piece: usize,
    /// Byte offset within that piece's data.
    pub at: u64,
    /// Bytes.
    pub len: u64,
}

impl Assembly {
    /// Checks that every piece is a box inside `shape` whose data holds exactly its elements,
    /// and that the pieces cover every element exactly once (no hole, no overlap). Errors say
    /// which piece, or which element, is wrong.
    pub fn new(shape: Vec<u64>, esize: u64, pieces: Vec<Piece>) -> Result<Assembly, String> {
        let numel = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|n| n.checked_mul(esize).is_some())
            .ok_or("the global size overflows")?;
        let mut covered = 0u64;
        for (i, p) in pieces.iter().enumerate() {
            if p.offsets.len() != shape.len() || p.sizes.len() != shape.len() {
                return Err(format!(
                    "chunk {i} has offsets {:?} and sizes {:?} for a {}-dimensional tensor",
                    p.offsets,
                    p.sizes,
                    shape.len()
                ));
            }
            let inside = p
                .offsets
                .iter()
                .zip(&p.sizes)
                .zip(&shape)
                .all(|((&o, &s), &g)| o.checked_add(s).is_some_and(|end| end <= g));
            if !inside {
                return Err(format!(
                    "chunk {i} (offsets {:?}, sizes {:?}) reaches outside the global size {shape:?}",
                    p.offsets, p.sizes
                ));
            }
            let n: u64 = p.sizes.iter().product();
            if n * esize != p.data.len {
                return Err(format!(
                    "chunk {i} (sizes {:?}) needs {} bytes but its data holds {}",
                    p.sizes,
                    n * esize,
                    p.data.len
                ));
            }
            covered = covered.saturating_add(n);
        }
        let mut pieces = pieces;
        pieces.retain(|p| !p.sizes.contains(&0));
        pieces.sort_by(|a, b| a.offsets.cmp(&b.offsets));
        // Pieces pairwise disjoint and as many elements in them as in the tensor: an exact
        // tiling. Past a few thousand pieces the pairs cost more than walking the runs.
        if pieces.len() <= PAIRWISE_LIMIT {
            for (i, a) in pieces.iter().enumerate() {
                if let Some(b) = pieces[i + 1..].iter().find(|b| boxes_meet(a, b)) {
                    return Err(format!(
                        "the chunks at offsets {:?} and {:?} overlap",
                        a.offsets, b.offsets
                    ));
                }
            }
        }
        if covered > numel {
            return Err(format!(
                "the chunks hold {covered} elements but the tensor has {numel}: chunks overlap"
            ));
        }
        let assembly = Assembly { shape, esize, pieces };
        if assembly.pieces.len() <= PAIRWISE_LIMIT {
            if covered < numel {
                return Err(format!(
                    "the chunks hold {covered} of the tensor's {numel} elements: they leave a hole"
                ));
            }
            return Ok(assembly);
        }
        let mut hint = 0;
        let mut at = 0u64;
        while at < numel {
            let (_, elems) = assembly.locate(at, &mut hint).ok_or_else(|| {
                let also = if covered == numel { "overlap elsewhere and " } else { "" };
                format!(
                    "element {:?} lies in no chunk: the chunks {also}leave a hole",
                    assembly.coords(at)
                )
            })?;
            at += elems;
        }
        Ok(assembly)
    }

    /// The global shape the pieces tile: the tensor's own, or (DeepSpeed ZeRO) its flat length.
    #[cfg_attr(not(any(feature = "cli", feature = "internals")), expect(dead_code, reason = "only inspect reads it"))]
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// The pieces, ordered by their offsets.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The global tensor's size in bytes.
    pub fn nbytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.esize
    }

    /// Calls `f` with the runs that make up bytes `offset .. offset + len` of the global
    /// tensor, in order. The range must lie inside it and on element boundaries, as every
    /// reader's blocks do; otherwise the error is `bad` of what is wrong.
    pub fn runs<E>(
        &self,
        offset: u64,
        len: u64,
        bad: impl Fn(String) -> E,
        mut f: impl FnMut(Run) -> Result<(), E>,
    ) -> Result<(), E> {
        if !offset.is_multiple_of(self.esize) || !len.is_multiple_of(self.esize) || offset.saturating_add(len) > self.nbytes() {
            return Err(bad(format!(
                "bytes {offset}..{} are not whole elements of the {}-byte tensor",
                offset + len,
                self.nbytes()
            )));
        }
        let mut hint = 0;
        let mut at = offset / self.esize;
        let end = (offset + len) / self.esize;
        while at < end {
            let (piece, elems) = self
                .locate(at, &mut hint)
                .ok_or_else(|| bad(format!("element {:?} lies in no chunk", self.coords(at))))?;
            let take = elems.min(end - at);
            let local = self.local_index(&self.pieces[piece], at);
            f(Run {
                piece,
                at: local * self.esize,
                len: take * self.esize,
            })?;
            at += take;
        }
        Ok(())
    }

    /// The coordinates of the element at row-major index `at`.
    fn coords(&self, mut at: u64) -> Vec<u64> {
        let mut c = vec![0; self.shape.len()];
        for d in (0..self.shape.len()).rev() {
            c[d] = at % self.shape[d];
            at /= self.shape[d];
        }
        c
    }

    /// The piece holding element `at` (tried first: `hint` and the piece after it) and how
    /// many elements from `at` on lie contiguously in both the global order and that piece.
    fn locate(&self, at: u64, hint: &mut usize) -> Option<(usize, u64)> {
        let c = self.coords(at);
        let n = self.pieces.len();
        let order = [*hint, *hint + 1].into_iter().filter(|&i| i < n).chain(0..n);
        for i in order {
            let p = &self.pieces[i];
            let inside = c
                .iter()
                .zip(&p.offsets)
                .zip(&p.sizes)
                .all(|((&x, &o), &s)| x >= o && x < o + s);
            if inside {
                *hint = i;
                return Some((i, self.run_length(p, &c)));
            }
        }
        None
    }

    /// Elements from coordinates `c` to the end of the longest stretch that is contiguous in the
    /// global tensor and in the piece: along the innermost dimension the piece does not span
    /// whole, to the piece's edge, with every dimension inside it whole.
    fn run_length(&self, p: &Piece, c: &[u64]) -> u64 {
        let ndim = self.shape.len();
        if ndim == 0 {
            return 1;
        }
        // j: the innermost dimension with every dimension after it spanned whole by the piece.
        let mut j = ndim - 1;
        while j > 0 && p.sizes[j] == self.shape[j] {
            j -= 1;
        }
        let inner: u64 = self.shape[j + 1..].iter().product();
        let within: u64 = c[j + 1..]
            .iter()
            .zip(&self.shape[j + 1..])
            .fold(0, |acc, (&x, &g)| acc * g + x);
        (p.offsets[j] + p.sizes[j] - c[j]) * inner - within
    }

    /// The row-major index within the piece of the global element `at`.
    fn local_index(&self, p: &Piece, at: u64) -> u64 {
        self.coords(at)
            .iter()
            .zip(&p.offsets)
            .zip(&p.sizes)
            .fold(0, |acc, ((&x, &o), &s)| acc * s + (x - o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;

    fn piece(offsets: &[u64], sizes: &[u64], bytes: Vec<u8>) -> Piece {
        let len = bytes.len() as u64;
        Piece {
            offsets: offsets.to_vec(),
            sizes: sizes.to_vec(),
            data: DataRef {
                source: Source::from_memory("chunk", bytes),
                offset: 0,
                len,
            },
        }
    }

    /// The global bytes, read run by run from the pieces' memory.
    fn assemble(a: &Assembly, offset: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        a.runs(offset, len, |e| e, |r| {
            let p = &a.pieces()[r.piece];
            out.extend_from_slice(p.data.source.slice(r.at, r.len).unwrap());
            Ok(())
        })
        .unwrap();
        out
    }

    /// A 4 x 6 u8 tensor whose element (i, j) is 10 i + j, cut into boxes.
    fn boxes(cuts: &[(&[u64], &[u64])]) -> Result<Assembly, String> {
        let pieces = cuts
            .iter()
            .map(|(o, s)| {
                let mut bytes = Vec::new();
                for i in o[0]..o[0] + s[0] {
                    for j in o[1]..o[1] + s[1] {
                        bytes.push((10 * i + j) as u8);
                    }
                }
                piece(o, s, bytes)
            })
            .collect();
        Assembly::new(vec![4, 6], 1, pieces)
    }

    fn expected(offset: u64, len: u64) -> Vec<u8> {
        (offset..offset + len).map(|k| (10 * (k / 6) + k % 6) as u8).collect()
    }

    #[test]
    fn rows_columns_grids_and_uneven_cuts_give_the_global_bytes() {
        let layouts: [&[(&[u64], &[u64])]; 4] = [
            &[(&[0, 0], &[2, 6]), (&[2, 0], &[2, 6])],
            &[(&[0, 3], &[4, 3]), (&[0, 0], &[4, 3])],
            &[(&[0, 0], &[3, 2]), (&[0, 2], &[3, 4]), (&[3, 0], &[1, 5]), (&[3, 5], &[1, 1])],
            &[(&[0, 0], &[3, 6]), (&[3, 0], &[1, 6]), (&[0, 0], &[0, 6])],
        ];
        for cuts in layouts {
            let a = boxes(cuts).unwrap();
            assert_eq!(assemble(&a, 0, 24), expected(0, 24), "{cuts:?}");
            assert_eq!(assemble(&a, 5, 9), expected(5, 9), "{cuts:?}");
        }
    }

    #[test]
    fn holes_overlaps_and_boxes_outside_are_refused() {
        let hole = boxes(&[(&[0, 0], &[2, 6]), (&[3, 0], &[1, 6])]).unwrap_err();
        assert!(hole.contains("hold 18 of the tensor's 24 elements: they leave a hole"), "{hole}");
        let overlap = boxes(&[(&[0, 0], &[3, 6]), (&[2, 0], &[1, 6])]).unwrap_err();
        assert!(overlap.contains("offsets [0, 0] and [2, 0] overlap"), "{overlap}");
        let outside = boxes(&[(&[0, 0], &[4, 6]), (&[3, 5], &[1, 2])]).unwrap_err();
        assert!(outside.contains("outside the global size"), "{outside}");
        let short = Assembly::new(vec![2], 4, vec![piece(&[0], &[2], vec![0; 7])]).unwrap_err();
        assert!(short.contains("needs 8 bytes but its data holds 7"), "{short}");
    }

    /// Past PAIRWISE_LIMIT pieces the tiling is checked by walking the runs: a hole is found
    /// at its element, an overlap (as many elements as the tensor, so a hole elsewhere) too.
    #[test]
    fn many_pieces_are_checked_by_walking() {
        let n = PAIRWISE_LIMIT as u64 + 10;
        let one = |i: u64| piece(&[i], &[1], vec![i as u8]);
        let all = Assembly::new(vec![n], 1, (0..n).map(one).collect()).unwrap();
        assert_eq!(assemble(&all, 0, n), (0..n).map(|i| i as u8).collect::<Vec<_>>());
        let hole = Assembly::new(vec![n], 1, (0..n).filter(|&i| i != 700).map(one).collect()).unwrap_err();
        assert!(hole.contains("element [700] lies in no chunk: the chunks leave a hole"), "{hole}");
        let twice = (0..n).map(|i| one(if i == 900 { 899 } else { i })).collect();
        let overlap = Assembly::new(vec![n], 1, twice).unwrap_err();
        assert!(overlap.contains("element [900] lies in no chunk: the chunks overlap elsewhere"), "{overlap}");
    }

    #[test]
    fn a_scalar_is_one_run() {
        let a = Assembly::new(vec![], 4, vec![piece(&[], &[], vec![1, 2, 3, 4])]).unwrap();
        assert_eq!(assemble(&a, 0, 4), vec![1, 2, 3, 4]);
    }
}
