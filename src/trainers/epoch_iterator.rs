//! The batches of a `fit`, in order, as Keras 3's `trainers/epoch_iterator.py`: worker threads
//! prepare them ahead of training into a bounded queue, so that augmentation overlaps compute
//! (Keras' `workers` and `max_queue_size`).
//!
//! The run's batches are numbered `g = 0, 1, ...` over the whole run (the loop's schedule says
//! where each epoch starts, as Keras' epoch iterator continues a pass across epochs when
//! `steps_per_epoch` is smaller than it). Run step `g` is batch `g % len` of the source's pass
//! `g / len` (the arrays given to `fit` reshuffle their samples at each pass; a generator's
//! batches come in the pass's shuffled order with a [`BatchOrder`]), as Keras 2's
//! `fit_generator` walked its generator across epochs of another length. Workers claim the next `g` in turn and the loop
//! takes them back in order, so the batches are the same whatever the number of workers. At
//! most `workers + max_queue_size` batches are in flight. When the model is on another device
//! than the CPU (a GPU), the workers also copy each batch there, so the copy overlaps the
//! previous step too.

use super::data::{Batch, BatchGenerator};
use crate::error::Result;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

/// The order in which an epoch's batches are trained, reshuffled at each epoch as Keras 3's
/// `fit(shuffle=True)` (and Keras 2's `fit_generator`) does for a generator of known length:
/// without it the last, partial batch would always be the step before validation.
pub(crate) struct BatchOrder {
    seed: u64,
    cache: Mutex<Option<(usize, Arc<Vec<u32>>)>>,
}

impl BatchOrder {
    pub fn new(seed: u64) -> Self {
        BatchOrder { seed, cache: Mutex::new(None) }
    }

    /// The generator's batch trained at position `i` of epoch `epoch` (of `len` batches).
    fn get(&self, epoch: usize, i: usize, len: usize) -> usize {
        use rand::{seq::SliceRandom, SeedableRng};
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.as_ref() {
            Some((e, order)) if *e == epoch && order.len() == len => order[i] as usize,
            _ => {
                let mut state = self.seed ^ (epoch as u64).wrapping_mul(0xA076_1D64_78BD_642F) ^ 0xBA7C_0DE5;
                let mut rng = rand::rngs::StdRng::seed_from_u64(crate::random::splitmix64(&mut state));
                let mut order: Vec<u32> = (0..len as u32).collect();
                order.shuffle(&mut rng);
                let b = order[i] as usize;
                *cache = Some((epoch, Arc::new(order)));
                b
            }
        }
    }
}

/// Which generator batch run step `g` is (see the module's documentation).
pub(crate) enum Numbering {
    /// Batch `g % len` of the generator's epoch `g / len`, in the epoch's shuffled order when
    /// one is given.
    Continuous { order: Option<BatchOrder> },
}

/// Where a run's batches come from: the generator, how its batches are numbered, and the
/// device they go to (`None`: where the generator makes them).
pub(crate) struct Source<'g> {
    pub generator: &'g (dyn BatchGenerator + 'g),
    pub numbering: Numbering,
    pub device: Option<Device>,
}

impl Source<'_> {
    /// Run step `g`, copied to the source's device.
    fn fetch(&self, g: usize) -> Result<Batch> {
        let (epoch, i) = match &self.numbering {
            Numbering::Continuous { order } => {
                let len = self.generator.len().max(1);
                let (epoch, i) = (g / len, g % len);
                (epoch, order.as_ref().map_or(i, |o| o.get(epoch, i, len)))
            }
        };
        let b = self.generator.batch_data(epoch, i)?;
        match &self.device {
            Some(d) => {
                let mv =
                    |v: Vec<Tensor>| v.into_iter().map(|t| t.to_device(d)).collect::<candle_core::Result<Vec<_>>>();
                Ok(Batch {
                    x: mv(b.x)?,
                    y: mv(b.y)?,
                    sample_weight: b.sample_weight.map(|w| w.to_device(d)).transpose()?,
                    prepared: b.prepared,
                })
            }
            None => Ok(b),
        }
    }
}

/// A run's batches from `first` to `end` (run steps), prepared by workers of a thread scope.
pub(crate) struct EpochIterator<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    source: &'env Source<'env>,
    next: usize,
    end: usize,
    workers: usize,
    queue: usize,
    rx: Option<Receiver<(usize, Result<Batch>)>>,
    pending: BTreeMap<usize, Result<Batch>>,
    stop: Arc<AtomicBool>,
    handles: Vec<ScopedJoinHandle<'scope, ()>>,
}

impl<'scope, 'env> EpochIterator<'scope, 'env> {
    /// Batches `first..end` of `source`, by `workers` threads of `scope` (0: made inline, when
    /// asked for) and at most `max_queue_size` waiting.
    pub fn new(
        scope: &'scope Scope<'scope, 'env>,
        source: &'env Source<'env>,
        first: usize,
        end: usize,
        workers: usize,
        max_queue_size: usize,
    ) -> Self {
        let mut it = EpochIterator {
            scope,
            source,
            next: first,
            end,
            workers,
            queue: max_queue_size,
            rx: None,
            pending: BTreeMap::new(),
            stop: Arc::new(AtomicBool::new(false)),
            handles: Vec::new(),
        };
        it.start(first);
        it
    }

    /// Starts the workers at run step `first`.
    fn start(&mut self, first: usize) {
        self.next = first;
        if self.workers == 0 {
            return;
        }
        let (tx, rx) = sync_channel(self.queue.max(1));
        let counter = Arc::new(AtomicUsize::new(first));
        let (end, source) = (self.end, self.source);
        self.handles = (0..self.workers)
            .map(|_| {
                let (tx, counter, stop) = (tx.clone(), counter.clone(), self.stop.clone());
                self.scope.spawn(move || loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let g = counter.fetch_add(1, Ordering::Relaxed);
                    if g >= end {
                        break;
                    }
                    let b = source.fetch(g);
                    if tx.send((g, b)).is_err() {
                        break;
                    }
                })
            })
            .collect();
        self.rx = Some(rx);
    }

    /// Stops the workers and waits for them.
    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver unblocks workers waiting to send.
        self.rx = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        self.pending.clear();
        self.stop = Arc::new(AtomicBool::new(false));
    }

    /// Run step `g`: the next one in order, or, after a jump (a resumed run), the workers
    /// restart from `g`.
    pub fn get(&mut self, g: usize) -> Result<Batch> {
        if self.workers == 0 {
            self.next = g + 1;
            return self.source.fetch(g);
        }
        if g != self.next {
            self.halt();
            self.start(g);
        }
        self.next += 1;
        loop {
            if let Some(b) = self.pending.remove(&g) {
                return b;
            }
            match self.rx.as_ref().expect("workers").recv() {
                Ok((i, b)) => {
                    self.pending.insert(i, b);
                }
                Err(_) => {
                    return Err(crate::error::Error::invalid(
                        "workers",
                        "the batch workers stopped before the run ended",
                    ));
                }
            }
        }
    }
}

impl Drop for EpochIterator<'_, '_> {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batch `(e, i)` is the tensor `[e, i]`.
    struct Ids(usize);

    impl BatchGenerator for Ids {
        fn len(&self) -> usize {
            self.0
        }
        fn samples(&self) -> usize {
            self.0
        }
        fn batch(&self, epoch: usize, index: usize) -> Result<(Tensor, Tensor)> {
            let x = Tensor::new(&[epoch as u32, index as u32], &Device::Cpu)?;
            Ok((x.clone(), x))
        }
    }

    fn run(workers: usize, order: Option<u64>, epochs: usize) -> Vec<Vec<u32>> {
        let len = 7;
        let ids = Ids(len);
        let source = Source {
            generator: &ids,
            numbering: Numbering::Continuous { order: order.map(BatchOrder::new) },
            device: None,
        };
        std::thread::scope(|s| {
            let mut p = EpochIterator::new(s, &source, 0, epochs * len, workers, 3);
            (0..epochs)
                .map(|e| {
                    (0..len)
                        .map(|i| {
                            let v = p.get(e * len + i).unwrap().x[0].to_vec1::<u32>().unwrap();
                            assert_eq!(v[0] as usize, e, "batch {i} of epoch {e} comes from the generator's epoch {e}");
                            v[1]
                        })
                        .collect()
                })
                .collect()
        })
    }

    #[test]
    fn batches_are_trained_in_a_new_order_each_epoch() {
        let in_order = run(2, None, 3);
        assert!(in_order.iter().all(|e| *e == (0..7).collect::<Vec<u32>>()));
        let shuffled = run(0, Some(5), 20);
        for e in &shuffled {
            let mut sorted = e.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..7).collect::<Vec<u32>>(), "every batch once per epoch: {e:?}");
        }
        // The partial last batch (6) is not always the step before validation.
        let last: std::collections::BTreeSet<u32> = shuffled.iter().map(|e| e[6]).collect();
        assert!(last.len() >= 4, "last batches over 20 epochs: {last:?}");
        assert!(shuffled.windows(2).any(|w| w[0] != w[1]));
        // The order depends on the seed only, not on the number of workers.
        assert_eq!(run(1, Some(5), 20), shuffled);
        assert_eq!(run(3, Some(5), 20), shuffled);
        assert_ne!(run(1, Some(6), 20), shuffled);
    }

    #[test]
    fn a_jump_restarts_the_workers_there() {
        let ids = Ids(4);
        let source = Source { generator: &ids, numbering: Numbering::Continuous { order: None }, device: None };
        std::thread::scope(|s| {
            let mut p = EpochIterator::new(s, &source, 0, 12, 2, 2);
            assert_eq!(p.get(0).unwrap().x[0].to_vec1::<u32>().unwrap(), [0, 0]);
            assert_eq!(p.get(9).unwrap().x[0].to_vec1::<u32>().unwrap(), [2, 1]);
            assert_eq!(p.get(10).unwrap().x[0].to_vec1::<u32>().unwrap(), [2, 2]);
        });
    }
}
