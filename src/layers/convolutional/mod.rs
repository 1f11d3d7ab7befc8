//! Convolution layers, as Keras' `layers/convolutional/`: [`Conv2D`] on kandle's own kernels
//! (direct, Winograd, AMX), [`DepthwiseConv2D`] and [`SeparableConv2D`], each with its own
//! backward pass, and [`Conv2DTranspose`] as a stride-1 convolution on those kernels.

mod conv2d;
mod depthwise;
mod transpose;

pub use conv2d::Conv2D;
pub use depthwise::{DepthwiseConv2D, SeparableConv2D};
pub use transpose::Conv2DTranspose;
