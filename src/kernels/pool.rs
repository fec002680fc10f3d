//! Work spread over candle's thread pool, each call handed its own part of the output as a
//! `&mut` slice (issue 13), so that the borrow checker, not a comment, keeps two threads from
//! writing the same element. The kernels used to share one raw pointer into the output
//! between the pool's workers (`SendPtr`, `Send + Sync` for any type), trusting each to
//! stay inside its own part.
//!
//! The pool still schedules: `execute_chunked` runs a closure on ranges of work items, about
//! eight per thread, taken from a shared cursor so that a fast thread takes over a slow
//! one's share, and inline when it is called from one of its own workers. The output is
//! handed out beside it: it sits in one `Mutex<&mut [T]>`, and each range takes as many
//! items as it holds off the front with `split_at_mut`. That is one uncontended lock per
//! range, as often as the pool's own cursor is touched, and the kernels' loops are those of
//! before. A range may get other items than the indices the pool named (two threads can
//! reach the lock in the other order), so each call is told the index of its first item.

use std::sync::{Mutex, PoisonError};

/// Runs `f(first, run)` over `out` cut into runs of whole `unit`-long items (the last item
/// may be shorter), where `first` is the index of the run's first item, on candle's pool
/// when `parallel`; otherwise once, on this thread, over all of `out`. Every item is in
/// exactly one run.
pub(crate) fn for_each_run<T: Send>(
    out: &mut [T],
    unit: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let unit = unit.max(1);
    if !parallel {
        f(0, out);
        return;
    }
    let items = out.len().div_ceil(unit);
    let rest = Mutex::new((0, out));
    candle_core::utils::barrier_pool().execute_chunked(items, |range| {
        let (first, run) = {
            let mut rest = rest.lock().unwrap_or_else(PoisonError::into_inner);
            let (first, all) = std::mem::take(&mut *rest);
            let (run, tail) = all.split_at_mut((range.len() * unit).min(all.len()));
            *rest = (first + range.len(), tail);
            (first, run)
        };
        f(first, run);
    });
}

/// One tile of a row-major matrix: rows `row0..row0 + rows.len()`, each of `rows` that row's
/// stretch of columns from `col0` on (as wide as the tile).
pub(crate) struct Tile<'t, 'o, T> {
    pub row0: usize,
    pub col0: usize,
    pub rows: &'t mut [&'o mut [T]],
}

impl<T: Copy> Tile<'_, '_, T> {
    /// Writes `values[i]` to row `r + i` of the tile from column `at` on (both relative to
    /// the tile): how the kernels hand back a few rows of outputs at a time.
    pub fn put<const C: usize>(&mut self, r: usize, at: usize, values: &[[T; C]]) {
        for (row, v) in self.rows[r..].iter_mut().zip(values) {
            row[at..at + C].copy_from_slice(v);
        }
    }
}

/// The order in which [`for_each_tile`] hands out tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// Every tile of the first block of rows, then of the next: a matrix product's
    /// activation rows stay in cache while the weight passes over them.
    RowBlocks,
    /// Every tile of the first band of columns, then of the next: what is read for one band
    /// (an attention head's keys and values) stays in cache.
    ColumnBands,
}

/// Runs `f(run)` over the tiles of `tile.0` rows by `tile.1` columns of the row-major matrix
/// `out` (whole rows, `cols` wide; tiles at the bottom and right edges are smaller), a run
/// of tiles per call on candle's pool, in `order`. Every element is in exactly one tile.
///
/// The rows are cut into their tiles' stretches once, on this thread: a slice per row and
/// tile, which for the largest products (512 rows of the 7B's MLP, 300 thousand stretches)
/// is a few MB and a fraction of a millisecond against the hundreds the product takes.
pub(crate) fn for_each_tile<T: Send>(
    out: &mut [T],
    cols: usize,
    (tile_rows, tile_cols): (usize, usize),
    order: Order,
    f: impl Fn(&mut [Tile<'_, '_, T>]) + Sync,
) {
    let (cols, tile_rows, tile_cols) = (cols.max(1), tile_rows.max(1), tile_cols.max(1));
    let rows = out.len().div_ceil(cols);
    let (blocks, bands) = (rows.div_ceil(tile_rows), cols.div_ceil(tile_cols));
    // Every row cut at the tiles' columns, the stretches ordered band by band.
    let mut cuts: Vec<_> = out
        .chunks_mut(cols)
        .map(|row| row.chunks_mut(tile_cols))
        .collect();
    let mut stretches: Vec<&mut [T]> = Vec::with_capacity(rows * bands);
    for _ in 0..bands {
        stretches.extend(cuts.iter_mut().filter_map(Iterator::next));
    }
    // Each band's tiles, top to bottom.
    let by_band = stretches
        .chunks_mut(rows.max(1))
        .enumerate()
        .map(|(band, band_rows)| {
            band_rows
                .chunks_mut(tile_rows)
                .enumerate()
                .map(move |(block, rows)| Tile {
                    row0: block * tile_rows,
                    col0: band * tile_cols,
                    rows,
                })
        });
    let mut tiles = Vec::with_capacity(blocks * bands);
    if order == Order::ColumnBands || blocks == 1 {
        tiles.extend(by_band.flatten());
    } else {
        let mut by_band: Vec<_> = by_band.collect();
        for _ in 0..blocks {
            tiles.extend(by_band.iter_mut().filter_map(Iterator::next));
        }
    }
    for_each_run(&mut tiles, 1, true, |_, run| f(run));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element is handed out once, at the index its run says, with or without the
    /// pool, for units that do and do not divide the length.
    #[test]
    fn runs_cover_every_item_once() {
        for (len, unit) in [(0, 3), (1, 1), (10, 3), (1000, 7), (4096, 64)] {
            for parallel in [false, true] {
                let mut out = vec![usize::MAX; len];
                for_each_run(&mut out, unit, parallel, |first, run| {
                    for (i, item) in run.chunks_mut(unit).enumerate() {
                        for (j, x) in item.iter_mut().enumerate() {
                            assert_eq!(*x, usize::MAX, "element written twice");
                            *x = (first + i) * unit + j;
                        }
                    }
                });
                assert!(
                    out.iter().enumerate().all(|(i, &x)| x == i),
                    "len {len}, unit {unit}, parallel {parallel}"
                );
            }
        }
    }

    /// Every element of a matrix is in exactly one tile, at the row and column its tile
    /// says, in both orders, for tiles that do and do not divide the matrix; row-block
    /// order hands out the first block's tiles first.
    #[test]
    fn tiles_cover_every_element_once() {
        for (rows, cols, tile) in [(1, 40, (32, 32)), (70, 40, (32, 32)), (9, 16, (4, 5))] {
            for order in [Order::RowBlocks, Order::ColumnBands] {
                let mut out = vec![(usize::MAX, usize::MAX); rows * cols];
                let seen = Mutex::new(Vec::new());
                for_each_tile(&mut out, cols, tile, order, |run| {
                    let keys: Vec<(usize, usize)> = run.iter().map(|t| (t.row0, t.col0)).collect();
                    seen.lock().expect("seen").push(keys);
                    for t in run {
                        assert!(t.rows.len() <= tile.0);
                        for (i, row) in t.rows.iter_mut().enumerate() {
                            assert!(row.len() <= tile.1);
                            for (j, x) in row.iter_mut().enumerate() {
                                assert_eq!(x.0, usize::MAX, "element written twice");
                                *x = (t.row0 + i, t.col0 + j);
                            }
                        }
                    }
                });
                for (i, &x) in out.iter().enumerate() {
                    assert_eq!(x, (i / cols, i % cols), "{rows}×{cols} by {tile:?}");
                }
                let runs = seen.into_inner().expect("seen");
                let tiles: usize = runs.iter().map(Vec::len).sum();
                assert_eq!(tiles, rows.div_ceil(tile.0) * cols.div_ceil(tile.1));
                // Runs may reach the pool's threads in any order, but within one the tiles
                // come in `order`.
                for run in runs {
                    let keys: Vec<_> = run
                        .iter()
                        .map(|&(r, c)| match order {
                            Order::RowBlocks => (r, c),
                            Order::ColumnBands => (c, r),
                        })
                        .collect();
                    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{order:?}: {keys:?}");
                }
            }
        }
    }
}
