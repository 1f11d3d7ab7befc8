//! Worker threads that prepare batches ahead of training into a bounded queue, so that
//! augmentation overlaps compute (Keras' `workers` and `max_queue_size`).
//!
//! Batch `s` of the run is batch `s % len` of the generator's epoch `s / len` (or, with
//! [`BatchOrder`], the batch that epoch's shuffled order puts there); workers claim
//! the next `s` in turn and the consumer puts them back in order, so the batches are the same
//! whatever the number of workers. At most `workers + max_queue_size` batches are in flight.
//! When the model is on another device than the CPU (a GPU), the workers also copy each batch
//! there, so the copy overlaps the previous step too.

use crate::error::Result;
use crate::preprocessing::image::BatchGenerator;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Batch = Result<(Tensor, Tensor)>;

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

/// Batches of a generator, in order, from `first` to `end` (global batch numbers).
pub(crate) struct Prefetcher {
    gen: Arc<dyn BatchGenerator>,
    next: usize,
    inline: bool,
    rx: Option<Receiver<(usize, Batch)>>,
    pending: BTreeMap<usize, Batch>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    queue: usize,
    end: usize,
    device: Option<Device>,
    order: Option<Arc<BatchOrder>>,
}

/// Batch `s` of the run, copied to `device` when one is given.
fn fetch(gen: &dyn BatchGenerator, s: usize, device: Option<&Device>, order: Option<&BatchOrder>) -> Batch {
    let len = gen.len().max(1);
    let (epoch, i) = (s / len, s % len);
    let i = order.map_or(i, |o| o.get(epoch, i, len));
    let (x, y) = gen.batch(epoch, i)?;
    match device {
        Some(d) => Ok((x.to_device(d)?, y.to_device(d)?)),
        None => Ok((x, y)),
    }
}

impl Prefetcher {
    pub fn new(
        gen: Arc<dyn BatchGenerator>,
        first: usize,
        end: usize,
        workers: usize,
        max_queue_size: usize,
        device: Option<Device>,
        order: Option<Arc<BatchOrder>>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if workers == 0 {
            return Prefetcher {
                gen,
                next: first,
                inline: true,
                rx: None,
                pending: BTreeMap::new(),
                stop,
                handles: Vec::new(),
                queue: max_queue_size,
                end,
                device,
                order,
            };
        }
        let (tx, rx) = sync_channel(max_queue_size.max(1));
        let counter = Arc::new(AtomicUsize::new(first));
        let handles = (0..workers)
            .map(|_| {
                let (gen, tx, counter, stop, device, order) =
                    (gen.clone(), tx.clone(), counter.clone(), stop.clone(), device.clone(), order.clone());
                std::thread::spawn(move || loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let s = counter.fetch_add(1, Ordering::Relaxed);
                    if s >= end {
                        break;
                    }
                    let b = fetch(gen.as_ref(), s, device.as_ref(), order.as_deref());
                    if tx.send((s, b)).is_err() {
                        break;
                    }
                })
            })
            .collect();
        Prefetcher {
            gen,
            next: first,
            inline: false,
            rx: Some(rx),
            pending: BTreeMap::new(),
            stop,
            handles,
            queue: max_queue_size,
            end,
            device,
            order,
        }
    }

    /// Global batch `s`: the next one in order, or, after a jump (a resumed run), the workers
    /// restart from `s`.
    pub fn get(&mut self, s: usize) -> Batch {
        if s != self.next && !self.inline {
            let (workers, queue, end) = (self.handles.len(), self.queue, self.end);
            *self = Prefetcher::new(self.gen.clone(), s, end, workers, queue, self.device.clone(), self.order.clone());
        }
        self.next = s;
        self.next_batch()
    }

    /// The next batch in order.
    fn next_batch(&mut self) -> Batch {
        let s = self.next;
        self.next += 1;
        if self.inline {
            return fetch(self.gen.as_ref(), s, self.device.as_ref(), self.order.as_deref());
        }
        loop {
            if let Some(b) = self.pending.remove(&s) {
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

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver unblocks workers waiting to send.
        self.rx = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
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
        let mut p = Prefetcher::new(
            Arc::new(Ids(len)),
            0,
            epochs * len,
            workers,
            3,
            None,
            order.map(|s| Arc::new(BatchOrder::new(s))),
        );
        (0..epochs)
            .map(|e| {
                (0..len)
                    .map(|i| {
                        let v = p.get(e * len + i).unwrap().0.to_vec1::<u32>().unwrap();
                        assert_eq!(v[0] as usize, e, "batch {i} of epoch {e} comes from the generator's epoch {e}");
                        v[1]
                    })
                    .collect()
            })
            .collect()
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
}
