//! [`AllReduce`] by NCCL between the CUDA devices of one process (the `nccl` feature), through
//! cudarc's bindings as candle re-exports them. Compiled in CI (against link stubs); run only
//! on a machine with several NVIDIA GPUs (docs/scale.md).

use super::AllReduce;
use crate::error::{Error, Result};
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::nccl::{Comm, Id, ReduceOp};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use std::sync::Mutex;

/// One NCCL communicator per replica. A communicator is used by one thread at a time (its
/// mutex), which is what NCCL asks of the threads sharing a process.
struct Communicator(Comm);

// SAFETY: a `Comm` is a handle NCCL lets any thread use, one at a time; the mutex around each
// guarantees that.
unsafe impl Send for Communicator {}

/// NCCL's all-reduce (sum) between CUDA devices of this process, as TensorFlow's
/// `tf.distribute.NcclAllReduce`: replica `r` of [`NcclAllReduce::new`]'s `devices` calls
/// [`AllReduce::all_reduce_sum`] with `replica = r` from its own thread; the sums stay on the
/// device (NCCL reduces over NVLink or PCIe without the host).
pub struct NcclAllReduce {
    /// This process's communicators, with their ranks.
    comms: Vec<(usize, Mutex<Communicator>)>,
    /// Ranks over all processes.
    world: usize,
    failed: Mutex<Option<String>>,
}

/// A new NCCL group's id (`ncclGetUniqueId`), as 256 hex digits: made by worker 0 and given to
/// every worker (a file on a shared disk, an environment variable set by the launcher), which
/// passes it to [`NcclAllReduce::from_rank`]: NCCL's rendezvous.
///
/// # Errors
/// NCCL failing to make one (no network interface it can use).
pub fn nccl_unique_id() -> Result<String> {
    let id = Id::new().map_err(|e| Error::invalid("nccl", format!("ncclGetUniqueId failed: {:?}", e.0)))?;
    Ok(id.internal().iter().map(|&c| format!("{:02x}", c as u8)).collect())
}

impl NcclAllReduce {
    /// Communicators between `devices` (CUDA devices, each once, in replica order), on the
    /// streams candle runs their kernels on, so that a reduction follows the gradients it sums.
    ///
    /// # Errors
    /// A device that is not a CUDA device, or NCCL failing to initialise.
    pub fn new(devices: &[Device]) -> Result<Self> {
        let streams = devices
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Device::Cuda(c) => Ok(c.cuda_stream()),
                other => Err(Error::invalid(
                    "devices",
                    format!("NCCL reduces between CUDA devices; device {i} is {:?}", other.location()),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let comms = Comm::from_devices(streams)
            .map_err(|e| Error::invalid("devices", format!("NCCL could not set up its communicators: {:?}", e.0)))?;
        let world = comms.len();
        Ok(NcclAllReduce {
            comms: comms.into_iter().enumerate().map(|(r, c)| (r, Mutex::new(Communicator(c)))).collect(),
            world,
            failed: Mutex::new(None),
        })
    }

    /// This process's place (`rank` of `workers`) in a group spanning processes, on one machine
    /// or several: every worker calls it with the same `id` ([`nccl_unique_id`], made by
    /// worker 0); it returns once all have joined. For
    /// [`MirroredStrategy::multi_worker`](super::MirroredStrategy::multi_worker).
    ///
    /// # Errors
    /// A device that is not a CUDA device, a malformed id, a rank not below `workers`, or NCCL
    /// failing to join the group.
    pub fn from_rank(device: &Device, rank: usize, workers: usize, id: &str) -> Result<Self> {
        let Device::Cuda(c) = device else {
            return Err(Error::invalid(
                "device",
                format!("NCCL needs a CUDA device, received {:?}", device.location()),
            ));
        };
        if rank >= workers {
            return Err(Error::invalid("rank", format!("expected a rank in 0..{workers}, received {rank}")));
        }
        let bytes: Option<Vec<u8>> = (id.len() == 256)
            .then(|| (0..128).map(|i| id.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect())
            .flatten();
        let bytes = bytes.ok_or_else(|| {
            Error::invalid("id", format!("expected 256 hex digits (nccl_unique_id), received {} characters", id.len()))
        })?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, b) in internal.iter_mut().zip(bytes) {
            *d = b as std::ffi::c_char;
        }
        let comm = Comm::from_rank(c.cuda_stream(), rank, workers, Id::uninit(internal))
            .map_err(|e| Error::invalid("id", format!("NCCL could not join the group: {:?}", e.0)))?;
        Ok(NcclAllReduce {
            comms: vec![(rank, Mutex::new(Communicator(comm)))],
            world: workers,
            failed: Mutex::new(None),
        })
    }
}

/// The all-reduce as a candle operation on a CUDA tensor (a new tensor holds the sum).
struct Sum<'a>(&'a Comm);

// SAFETY: the operation runs on the thread that holds the communicator's mutex.
unsafe impl Send for Sum<'_> {}
unsafe impl Sync for Sum<'_> {}

impl CustomOp1 for Sum<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce-sum"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("NCCL's all-reduce needs CUDA tensors, received a CPU tensor")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("NCCL's all-reduce needs a contiguous tensor".into()))?;
        let dev = s.device().clone();
        let nccl = |e: candle_core::cuda::cudarc::nccl::result::NcclError| {
            candle_core::Error::Msg(format!("NCCL all-reduce failed: {:?}", e.0))
        };
        let out = match s.dtype() {
            DType::F32 => {
                let src = s.as_cuda_slice::<f32>()?.slice(start..end);
                // SAFETY: NCCL writes every element before anything reads it.
                let mut dst = unsafe { dev.alloc::<f32>(end - start)? };
                self.0.all_reduce(&src, &mut dst, &ReduceOp::Sum).map_err(nccl)?;
                CudaStorage::wrap_cuda_slice(dst, dev)
            }
            DType::F64 => {
                let src = s.as_cuda_slice::<f64>()?.slice(start..end);
                // SAFETY: as above.
                let mut dst = unsafe { dev.alloc::<f64>(end - start)? };
                self.0.all_reduce(&src, &mut dst, &ReduceOp::Sum).map_err(nccl)?;
                CudaStorage::wrap_cuda_slice(dst, dev)
            }
            other => candle_core::bail!("NCCL's all-reduce here sums f32 or f64 tensors, received {other:?}"),
        };
        Ok((out, l.shape().clone()))
    }
}

impl AllReduce for NcclAllReduce {
    fn replicas(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, replica: usize, tensors: Vec<Tensor>) -> Result<Vec<Tensor>> {
        if let Some(reason) = self.failed.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Err(Error::invalid("replica", format!("another replica gave up: {reason}")));
        }
        let (_, comm) = self.comms.iter().find(|(r, _)| *r == replica).ok_or_else(|| {
            let mine: Vec<usize> = self.comms.iter().map(|(r, _)| *r).collect();
            Error::invalid("replica", format!("expected one of this process's replicas {mine:?}, received {replica}"))
        })?;
        let comm = comm.lock().unwrap_or_else(|e| e.into_inner());
        tensors.iter().map(|t| Ok(t.contiguous()?.apply_op1_no_bwd(&Sum(&comm.0))?)).collect()
    }

    /// Records the failure: later calls fail at once. A replica already waiting inside a NCCL
    /// collective for the one that failed is not woken (NCCL has no such call here): a step
    /// that fails on one GPU ends the training with that error from the first replica.
    fn abort(&self, reason: &str) {
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
    }
}
