//! The parallel data pass: work that reads every byte of many tensors (stats, hashes) runs on
//! all cores, one tensor per task. Tasks are taken largest first, so that one big embedding
//! does not start last and leave the other cores idle; results come back in input order.
//! Memory stays bounded: each worker streams its tensor in the readers' fixed-size chunks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Worker threads for a pass: the cores this process may use.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` of every item, computed on up to `threads` threads, heaviest `weight` first; the
/// results in the order of `items`.
pub(crate) fn map<T: Sync, R: Send>(
    items: &[T],
    weight: impl Fn(&T) -> u64,
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weight(&items[i])));
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let r = f(&items[i]);
                    // A worker that panicked poisoned nothing we need: its own result is missing
                    // and the scope re-raises its panic.
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every task ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_input_order_on_any_thread_count() {
        let items: Vec<u64> = (0..100).map(|i| (i * 37) % 101).collect();
        for threads in [1, 2, 3, 8, 200] {
            let got = map(&items, |&x| x, threads, |&x| x * 2);
            assert_eq!(
                got,
                items.iter().map(|x| x * 2).collect::<Vec<_>>(),
                "{threads} threads"
            );
        }
        assert!(map(&[] as &[u64], |&x| x, 4, |&x| x).is_empty());
    }

    #[test]
    fn work_spreads_over_threads() {
        let items = [0u8; 8];
        let ids = map(
            &items,
            |_| 1,
            4,
            |_| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                std::thread::current().id()
            },
        );
        let distinct: std::collections::HashSet<_> = ids.into_iter().collect();
        assert!(distinct.len() > 1, "all tasks ran on one thread");
    }
}
