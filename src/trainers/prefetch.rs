//! Worker threads that prepare batches ahead of training into a bounded queue, so that
//! augmentation overlaps compute (Keras' `workers` and `max_queue_size`).
//!
//! Batch `s` of the run is batch `s % len` of the generator's epoch `s / len`; workers claim
//! the next `s` in turn and the consumer puts them back in order, so the batches are the same
//! whatever the number of workers. At most `workers + max_queue_size` batches are in flight.
//! When the model is on another device than the CPU (a GPU), the workers also copy each batch
//! there, so the copy overlaps the previous step too.

use crate::preprocessing::image::BatchGenerator;
use crate::Result;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

type Batch = Result<(Tensor, Tensor)>;

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
}

/// Batch `s` of the run, copied to `device` when one is given.
fn fetch(gen: &dyn BatchGenerator, s: usize, device: Option<&Device>) -> Batch {
    let len = gen.len().max(1);
    let (x, y) = gen.batch(s / len, s % len)?;
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
            };
        }
        let (tx, rx) = sync_channel(max_queue_size.max(1));
        let counter = Arc::new(AtomicUsize::new(first));
        let handles = (0..workers)
            .map(|_| {
                let (gen, tx, counter, stop, device) =
                    (gen.clone(), tx.clone(), counter.clone(), stop.clone(), device.clone());
                std::thread::spawn(move || loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let s = counter.fetch_add(1, Ordering::Relaxed);
                    if s >= end {
                        break;
                    }
                    let b = fetch(gen.as_ref(), s, device.as_ref());
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
        }
    }

    /// Global batch `s`: the next one in order, or, after a jump (a resumed run), the workers
    /// restart from `s`.
    pub fn get(&mut self, s: usize) -> Batch {
        if s != self.next && !self.inline {
            let (workers, queue, end) = (self.handles.len(), self.queue, self.end);
            *self = Prefetcher::new(self.gen.clone(), s, end, workers, queue, self.device.clone());
        }
        self.next = s;
        self.next_batch()
    }

    /// The next batch in order.
    fn next_batch(&mut self) -> Batch {
        let s = self.next;
        self.next += 1;
        if self.inline {
            return fetch(self.gen.as_ref(), s, self.device.as_ref());
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
                    return Err(crate::Error::invalid("workers", "the batch workers stopped before the run ended"));
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
