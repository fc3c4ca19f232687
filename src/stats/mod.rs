//! Numbers of tensors: counts of NaN, infinities, zeros and subnormals; min, max, mean, std, L2
//! norm; what a float16 cast would lose.

mod kernel;
mod moments;
