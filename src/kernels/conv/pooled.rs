//! A convolution with Keras' default max pooling fused in (stride equal to the window, no
//! padding): the pooled output and each maximum's position, and the gradients from those.

use super::{backward, forward, ConvParams, Geom};
use crate::kernels::{cpu_slice, Float};
use candle_core::Tensor;

/// [`conv2d_fused`](crate::kernels::conv2d_fused) followed by Keras' `MaxPooling2D(pool)` with its defaults (strides equal
/// to the window, 'valid' padding) in one pass: each image's convolution is pooled while in
/// cache and never stored, so the layer's full-size output (the tutorial's 30x30x32 maps, 29.5
/// MB a batch of 256) makes no trip through memory, neither here nor in the backward pass.
/// Returns the pooled output and, as a `u8` tensor of its shape, the position of each pooled
/// value in its window (row-major: the first maximum, which the max pooling's gradient
/// follows), for [`conv2d_max_pool_backward`]. The same values, bit for bit, as
/// [`conv2d_fused`](crate::kernels::conv2d_fused) then [`pool2d`](crate::kernels::pool2d) (CPU only, f32 or f64, no autograd).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kandle::kernels::{conv2d_fused, conv2d_max_pool, pool2d, ConvParams, PoolKind, PoolParams};
/// let p = ConvParams { stride: (1, 1), dilation: (1, 1), padding: (0, 0, 0, 0) };
/// let x = Tensor::randn(0f32, 1., (2, 7, 7, 3), &Device::Cpu)?;
/// let k = Tensor::randn(0f32, 1., (3, 3, 3, 4), &Device::Cpu)?;
/// let (pooled, argmax) = conv2d_max_pool(&x, &k, None, true, p, (2, 2))?; // 5x5 -> 2x2
/// let pp = PoolParams { pool: (2, 2), stride: (2, 2), padding: (0, 0, 0, 0) };
/// let unfused = pool2d(&conv2d_fused(&x, &k, None, true, p)?, PoolKind::Max, pp)?;
/// assert_eq!(pooled.dims(), [2, 2, 2, 4]);
/// assert_eq!(pooled.flatten_all()?.to_vec1::<f32>()?, unfused.flatten_all()?.to_vec1::<f32>()?);
/// assert!(argmax.flatten_all()?.to_vec1::<u8>()?.iter().all(|&a| a < 4));
/// # Ok::<(), candle_core::Error>(())
/// ```
///
/// # Errors
/// Shapes that do not fit, a window of no pixels, of more than 256 or larger than the
/// convolution's output, another device than the CPU, or other element types than f32 and f64.
pub fn conv2d_max_pool(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
    p: ConvParams,
    pool: (usize, usize),
) -> candle_core::Result<(Tensor, Tensor)> {
    if !x.device().is_cpu() {
        candle_core::bail!("conv2d_max_pool: kandle's fused pooling runs on the CPU");
    }
    let g = Geom::new(x.dims(), kernel.dims(), p)?;
    check_pool(&g, pool, "conv2d_max_pool")?;
    if let Some(b) = bias {
        if b.dims() != [g.co] {
            candle_core::bail!("conv2d_max_pool: bias of shape {:?} for {} filters", b.dims(), g.co);
        }
    }
    let (x, k) = (x.contiguous()?, kernel.contiguous()?);
    let b = bias.map(Tensor::contiguous).transpose()?;
    let dims = (g.n, g.oh / pool.0, g.ow / pool.1, g.co);
    fn run<T: Float + candle_core::WithDType>(
        g: &Geom,
        (x, k, b): (&Tensor, &Tensor, Option<&Tensor>),
        relu: bool,
        pool: (usize, usize),
        dims: (usize, usize, usize, usize),
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (pooled, argmax) = {
            let guards: Vec<_> = [Some(x), Some(k), b].into_iter().flatten().map(|t| t.storage_and_layout()).collect();
            let slices = guards
                .iter()
                .map(|(s, l)| cpu_slice::<T>(s, l, "conv2d_max_pool"))
                .collect::<candle_core::Result<Vec<_>>>()?;
            forward::forward_pooled(g, slices[0], slices[1], (slices.get(2).copied(), relu), pool)
        };
        let dev = x.device();
        Ok((Tensor::from_vec(pooled, dims, dev)?, Tensor::from_vec(argmax, dims, dev)?))
    }
    match x.dtype() {
        candle_core::DType::F32 => run::<f32>(&g, (&x, &k, b.as_ref()), relu, pool, dims),
        candle_core::DType::F64 => run::<f64>(&g, (&x, &k, b.as_ref()), relu, pool, dims),
        d => candle_core::bail!("conv2d_max_pool: expected f32 or f64 tensors, received {d:?}"),
    }
}

/// The window `pool` fits the convolution's output: at least one pixel, at most 256 (a `u8`
/// position), no larger than the output.
fn check_pool(g: &Geom, pool: (usize, usize), op: &str) -> candle_core::Result<()> {
    if pool.0 == 0 || pool.1 == 0 || pool.0 * pool.1 > 256 || pool.0 > g.oh || pool.1 > g.ow {
        candle_core::bail!(
            "{op}: pool window {pool:?} does not fit the convolution's {}x{} output (1 to 256 pixels, no larger than the output)",
            g.oh,
            g.ow
        );
    }
    Ok(())
}

/// The gradients of [`conv2d_max_pool`] for the pooled output's gradient `dpooled`: `(dx, dk,
/// db)` as [`conv2d_backward`](crate::kernels::conv2d_backward) gives them for the unfused convolution and pooling, bit for
/// bit, with `dx` only when `need_input_grad` and `db` only when `with_bias`. Each image's
/// output gradient is built in cache from the pooled gradient and the positions (masked by
/// ReLU where the window's maximum is not positive), never as a full-size tensor.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kandle::kernels::{conv2d_max_pool, conv2d_max_pool_backward, ConvParams};
/// let p = ConvParams { stride: (1, 1), dilation: (1, 1), padding: (0, 0, 0, 0) };
/// let x = Tensor::ones((1, 3, 3, 1), candle_core::DType::F32, &Device::Cpu)?;
/// let k = Tensor::ones((2, 2, 1, 1), candle_core::DType::F32, &Device::Cpu)?;
/// let (pooled, argmax) = conv2d_max_pool(&x, &k, None, true, p, (2, 2))?; // one value, 4
/// let dpooled = pooled.ones_like()?;
/// let (dx, dk, _) =
///     conv2d_max_pool_backward(&x, &k, &pooled, &argmax, &dpooled, true, false, p, (2, 2), true)?;
/// // The gradient goes to the first of four equal outputs, the top-left one.
/// assert_eq!(dx.unwrap().flatten_all()?.to_vec1::<f32>()?, vec![1., 1., 0., 1., 1., 0., 0., 0., 0.]);
/// assert_eq!(dk.flatten_all()?.to_vec1::<f32>()?, vec![1., 1., 1., 1.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
///
/// # Errors
/// Shapes that do not fit, positions outside the window, another device than the CPU, or
/// mixed element types.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_max_pool_backward(
    x: &Tensor,
    k: &Tensor,
    pooled: &Tensor,
    argmax: &Tensor,
    dpooled: &Tensor,
    relu: bool,
    with_bias: bool,
    p: ConvParams,
    pool: (usize, usize),
    need_input_grad: bool,
) -> candle_core::Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
    if !x.device().is_cpu() {
        candle_core::bail!("conv2d_max_pool_backward: kandle's own backward pass runs on the CPU");
    }
    let g = Geom::new(x.dims(), k.dims(), p)?;
    check_pool(&g, pool, "conv2d_max_pool_backward")?;
    let dims = [g.n, g.oh / pool.0, g.ow / pool.1, g.co];
    if pooled.dims() != dims || argmax.dims() != dims || dpooled.dims() != dims {
        candle_core::bail!(
            "conv2d_max_pool_backward: expected pooled values, positions and gradient of shape {dims:?}, received {:?}, {:?} and {:?}",
            pooled.dims(),
            argmax.dims(),
            dpooled.dims()
        );
    }
    if argmax.dtype() != candle_core::DType::U8 {
        candle_core::bail!("conv2d_max_pool_backward: expected u8 positions, received {:?}", argmax.dtype());
    }
    let (x, k, pooled, dpooled) = (x.contiguous()?, k.contiguous()?, pooled.contiguous()?, dpooled.contiguous()?);
    let argmax = argmax.contiguous()?;
    fn run<T: Float>(
        g: &Geom,
        (x, k, pooled, argmax, dpooled): (&Tensor, &Tensor, &Tensor, &Tensor, &Tensor),
        relu: bool,
        pool: (usize, usize),
        need_dx: bool,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
        let op = "conv2d_max_pool_backward";
        let guards = [x, k, pooled, dpooled].map(|t| t.storage_and_layout());
        let slices = guards.iter().map(|(s, l)| cpu_slice::<T>(s, l, op)).collect::<candle_core::Result<Vec<_>>>()?;
        let (s, l) = argmax.storage_and_layout();
        let positions = cpu_slice::<u8>(&s, l, op)?;
        // The largest position first (a maximum the compiler vectorizes: the scan is on the
        // calling thread), the first one out of range only to report it.
        let window = pool.0 * pool.1;
        let largest = positions.iter().copied().max().unwrap_or(0);
        if let Some(&a) =
            (usize::from(largest) >= window).then(|| positions.iter().find(|&&a| usize::from(a) >= window)).flatten()
        {
            candle_core::bail!(
                "{op}: expected window positions below {window} (a {}x{} window), received position {a}",
                pool.0,
                pool.1
            );
        }
        let src = backward::OutGrad::Pooled { pooled: slices[2], argmax: positions, dpooled: slices[3], relu, pool };
        let (dx, dk, db) = backward::backward_from(g, slices[0], slices[1], src, need_dx);
        let dev = x.device();
        let dx = dx.map(|v| Tensor::from_vec(v, x.dims(), dev)).transpose()?;
        Ok((dx, Tensor::from_vec(dk, k.dims(), dev)?, Tensor::from_vec(db, g.co, dev)?))
    }
    let args = (&x, &k, &pooled, &argmax, &dpooled);
    let (dx, dk, db) = match (x.dtype(), k.dtype(), pooled.dtype(), dpooled.dtype()) {
        (candle_core::DType::F32, candle_core::DType::F32, candle_core::DType::F32, candle_core::DType::F32) => {
            run::<f32>(&g, args, relu, pool, need_input_grad)?
        }
        (candle_core::DType::F64, candle_core::DType::F64, candle_core::DType::F64, candle_core::DType::F64) => {
            run::<f64>(&g, args, relu, pool, need_input_grad)?
        }
        d => candle_core::bail!("conv2d_max_pool_backward: expected f32 or f64 tensors of one type, received {d:?}"),
    };
    Ok((dx, dk, with_bias.then_some(db)))
}
