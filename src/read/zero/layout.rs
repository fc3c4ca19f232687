//! Where each parameter's fp32 elements lie in the ranks' flat partitions, as DeepSpeed's
//! `zero_to_fp32.py` reads them back. Every parameter becomes the pieces of a 1-D assembly
//! ([`crate::assembly`]): runs of the partitions' file bytes, never copied.
//!
//! ZeRO-1/2: per parameter group, the ranks' partitions joined in rank order are the group's
//! flat vector (the last rank's padding is not saved); parameters lie in it one after another in
//! `param_shapes` order, each followed by its `param_alignment_paddings` elements when the file
//! records them. The end must round to the same multiple of 2 x world size as the vector's
//! length (DeepSpeed pads groups to it).
//!
//! ZeRO-3: each rank's groups joined are its flat vector; every parameter of `n` elements takes
//! `ceil(n / world)` elements of each rank's vector at the same offset, and the parameter is
//! rank 0's part, then rank 1's..., cut to `n` (the last part holds the padding). Together the
//! parameters must fill each rank's vector exactly.

use std::collections::HashSet;

use crate::assembly::Piece;
use crate::model::DataRef;

use super::states::Stage;

/// Bytes of a float32 element.
const F32: u64 = 4;

/// A parameter's name, shape and pieces (1-D, in elements of the flat parameter).
pub struct Param {
    pub name: String,
    pub shape: Vec<u64>,
    pub pieces: Vec<Piece>,
}

/// The parameters of every group, in order. `partitions[rank][group]`: flat fp32 partitions.
/// Errors say which parameter or group does not fit.
pub fn params(
    stage: Stage,
    shapes: &[Vec<(String, Vec<u64>)>],
    paddings: Option<&[Vec<u64>]>,
    partitions: &[Vec<DataRef>],
) -> Result<Vec<Param>, String> {
    let groups = shapes.len();
    for (rank, p) in partitions.iter().enumerate() {
        if p.len() != groups {
            return Err(format!(
                "{} saved {} fp32 partitions but the model has {groups} parameter groups",
                rank_file(p, rank),
                p.len()
            ));
        }
    }
    match stage {
        Stage::Two => stage2(shapes, paddings, partitions),
        Stage::Three => stage3(shapes, partitions),
    }
}

/// `rank 1 (zero_pp_rank_1_mp_rank_00_optim_states.pt)`: a rank and the file of its partitions.
fn rank_file(partitions: &[DataRef], rank: usize) -> String {
    match partitions.first() {
        Some(d) => format!(
            "rank {rank} ({})",
            d.source.path().file_name().unwrap_or_default().to_string_lossy()
        ),
        None => format!("rank {rank}"),
    }
}

pub fn numel(name: &str, shape: &[u64]) -> Result<u64, String> {
    shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|n| n.checked_mul(F32).is_some())
        .ok_or_else(|| format!("parameter '{name}' has a shape {shape:?} whose size overflows"))
}

fn elements(d: &DataRef) -> u64 {
    d.len / F32
}

/// Pieces holding elements `start .. start + n` of the runs (of `esize`-byte elements) joined,
/// placed from element `at` of the parameter; None when the runs end first.
pub fn cut(runs: &[&DataRef], esize: u64, start: u64, n: u64, at: u64, out: &mut Vec<Piece>) -> Option<()> {
    let end = start.checked_add(n)?;
    let mut base = 0u64;
    for run in runs {
        let run_end = base + run.len / esize;
        let (lo, hi) = (start.max(base), end.min(run_end));
        if lo < hi {
            out.push(Piece {
                offsets: vec![at + (lo - start)],
                sizes: vec![hi - lo],
                data: DataRef {
                    source: run.source.clone(),
                    offset: run.offset + (lo - base) * esize,
                    len: (hi - lo) * esize,
                },
            });
        }
        base = run_end;
    }
    (end <= base).then_some(())
}

fn stage2(
    shapes: &[Vec<(String, Vec<u64>)>],
    paddings: Option<&[Vec<u64>]>,
    partitions: &[Vec<DataRef>],
) -> Result<Vec<Param>, String> {
    let align = 2 * partitions.len() as u64;
    let round = |x: u64| x.div_ceil(align) * align;
    let mut params = Vec::new();
    for (g, group) in shapes.iter().enumerate() {
        let runs: Vec<&DataRef> = partitions.iter().map(|p| &p[g]).collect();
        let avail: u64 = runs.iter().map(|r| elements(r)).sum();
        let pads = match paddings {
            None => None,
            Some(p) => match p.get(g) {
                Some(pads) if pads.len() == group.len() => Some(pads),
                found => {
                    return Err(format!(
                        "param_alignment_paddings has {} entries for group {g}, which has {} parameters",
                        found.map_or(0, Vec::len),
                        group.len()
                    ))
                }
            },
        };
        let mut offset = 0u64;
        for (i, (name, shape)) in group.iter().enumerate() {
            let n = numel(name, shape)?;
            let mut pieces = Vec::new();
            cut(&runs, F32, offset, n, 0, &mut pieces).ok_or_else(|| {
                format!(
                    "parameter '{name}' ({n} elements from {offset}) reaches past group {g}'s {avail} saved elements"
                )
            })?;
            params.push(Param {
                name: name.clone(),
                shape: shape.clone(),
                pieces,
            });
            offset += n + pads.map_or(0, |p| p[i]);
        }
        if round(offset) != round(avail) {
            return Err(format!(
                "group {g}: the parameters take {offset} elements but the ranks saved {avail} (rounded to {align}: {} and {})",
                round(offset),
                round(avail)
            ));
        }
    }
    Ok(params)
}

fn stage3(shapes: &[Vec<(String, Vec<u64>)>], partitions: &[Vec<DataRef>]) -> Result<Vec<Param>, String> {
    let world = partitions.len() as u64;
    let sizes: Vec<u64> = partitions[0].iter().map(elements).collect();
    for (rank, p) in partitions.iter().enumerate().skip(1) {
        let own: Vec<u64> = p.iter().map(elements).collect();
        if own != sizes {
            return Err(format!(
                "{}: its fp32 partitions hold {own:?} elements but rank 0's hold {sizes:?}",
                rank_file(p, rank)
            ));
        }
    }
    let mut all: Vec<(&String, &Vec<u64>)> = Vec::new();
    let mut seen = HashSet::new();
    for (name, shape) in shapes.iter().flatten() {
        if !seen.insert(name) {
            return Err(format!("parameter '{name}' is listed in two groups"));
        }
        all.push((name, shape));
    }
    let mut per_rank = 0u64;
    for (name, shape) in &all {
        per_rank = per_rank
            .checked_add(numel(name, shape)?.div_ceil(world))
            .ok_or("the parameters' sizes overflow")?;
    }
    let avail: u64 = sizes.iter().sum();
    if per_rank != avail {
        return Err(format!(
            "the parameters take {per_rank} elements of each rank's partitions, which hold {avail}"
        ));
    }
    let mut params = Vec::new();
    let mut offset = 0u64;
    for (name, shape) in all {
        let n = numel(name, shape)?;
        let part = n.div_ceil(world);
        let mut pieces = Vec::new();
        for (rank, p) in partitions.iter().enumerate() {
            let at = rank as u64 * part;
            if at >= n {
                break;
            }
            let runs: Vec<&DataRef> = p.iter().collect();
            cut(&runs, F32, offset, part.min(n - at), at, &mut pieces)
                .ok_or_else(|| format!("parameter '{name}' reaches past the partitions of {}", rank_file(p, rank)))?;
        }
        params.push(Param {
            name: name.clone(),
            shape: shape.clone(),
            pieces,
        });
        offset += part;
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;

    /// A partition of `n` elements whose bytes are the element numbers `first..first + n`
    /// (one byte each of four) in a shared buffer.
    fn partition(source: &std::sync::Arc<Source>, first: u64, n: u64) -> DataRef {
        DataRef {
            source: source.clone(),
            offset: first * F32,
            len: n * F32,
        }
    }

    /// The element numbers a parameter's pieces read, in parameter order.
    fn read(p: &Param) -> Vec<u64> {
        let mut pieces: Vec<&Piece> = p.pieces.iter().collect();
        pieces.sort_by_key(|x| x.offsets[0]);
        pieces
            .iter()
            .flat_map(|x| (0..x.sizes[0]).map(|i| x.data.offset / F32 + i))
            .collect()
    }

    fn shapes(groups: &[&[(&str, u64)]]) -> Vec<Vec<(String, Vec<u64>)>> {
        groups
            .iter()
            .map(|g| g.iter().map(|(n, s)| (n.to_string(), vec![*s])).collect())
            .collect()
    }

    /// Two ranks, one group of 3 + 2 elements (padded to 8 in training, 4 + 1 saved): the
    /// second parameter starts in rank 0's partition and ends in rank 1's.
    #[test]
    fn stage2_joins_the_ranks_partitions() {
        let buf = Source::from_memory("p", vec![0; 64]);
        let parts = vec![vec![partition(&buf, 0, 4)], vec![partition(&buf, 10, 1)]];
        let params = params(Stage::Two, &shapes(&[&[("a", 3), ("b", 2)]]), None, &parts).unwrap();
        assert_eq!(read(&params[0]), vec![0, 1, 2]);
        assert_eq!(read(&params[1]), vec![3, 10]);
        let long = params_err(Stage::Two, &[&[("a", 3), ("b", 3)]], &parts);
        assert!(long.contains("'b' (3 elements from 3) reaches past group 0's 5"), "{long}");
        let short = params_err(Stage::Two, &[&[("a", 1)]], &parts);
        assert!(short.contains("take 1 elements but the ranks saved 5"), "{short}");
    }

    /// Two ranks, a 3-element parameter (2 + 1 and a padding element) then a 2-element one,
    /// each rank's vector split over two groups.
    #[test]
    fn stage3_interleaves_the_ranks() {
        let buf = Source::from_memory("p", vec![0; 256]);
        let parts = vec![
            vec![partition(&buf, 0, 1), partition(&buf, 20, 2)],
            vec![partition(&buf, 40, 1), partition(&buf, 60, 2)],
        ];
        let params = params(Stage::Three, &shapes(&[&[("a", 3)], &[("b", 2)]]), None, &parts).unwrap();
        assert_eq!(read(&params[0]), vec![0, 20, 40]);
        assert_eq!(read(&params[1]), vec![21, 61]);
        let err = params_err(Stage::Three, &[&[("a", 3)], &[("b", 4)]], &parts);
        assert!(err.contains("take 4 elements of each rank's partitions, which hold 3"), "{err}");
    }

    fn params_err(stage: Stage, groups: &[&[(&str, u64)]], parts: &[Vec<DataRef>]) -> String {
        let wanted = shapes(groups);
        let parts: Vec<Vec<DataRef>> = parts.iter().map(|p| p[..wanted.len()].to_vec()).collect();
        match params(stage, &wanted, None, &parts) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    }
}
