//! The MLP's gate on CPU: `silu(gate) · up` in one vectorized pass.
//!
//! Through candle it is two ops (`silu`, then the product), two `[tokens, intermediate]`
//! tensors allocated and written, and a scalar libm `expf` per element: ~24 million of them
//! in a 512-token SmolLM2 prefill. Here one pass reads both inputs once and uses the same
//! polynomial `exp` as the attention softmax.

use candle_core::Tensor;

#[cfg(target_arch = "x86_64")]
use crate::weights::with_cpu_f32;

/// `silu(gate) · up` for two f32 CPU tensors of the same shape; `None` when this CPU lacks AVX2
/// or the inputs are not that (the caller then uses candle's ops).
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Option<Tensor>> {
    #[cfg(target_arch = "x86_64")]
    {
        let Some(simd) = pulp::x86::V3::try_new() else {
            return Ok(None);
        };
        if gate.shape() != up.shape() {
            return Ok(None);
        }
        let (gate, up) = (gate.contiguous()?, up.contiguous()?);
        let values = with_cpu_f32(&gate, |gate| {
            with_cpu_f32(&up, |up| {
                let mut out = vec![0f32; gate.len()];
                simd.vectorize(Swiglu {
                    simd,
                    gate,
                    up,
                    out: &mut out,
                });
                out
            })
        });
        let Some(values) = values.flatten() else {
            return Ok(None);
        };
        Ok(Some(Tensor::from_vec(values, gate.shape(), gate.device())?))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (gate, up);
        Ok(None)
    }
}

#[cfg(target_arch = "x86_64")]
struct Swiglu<'a> {
    simd: pulp::x86::V3,
    gate: &'a [f32],
    up: &'a [f32],
    out: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl pulp::NullaryFnOnce for Swiglu<'_> {
    type Output = ();

    /// `g · sigmoid(g) · up`, with the sigmoid from `e^−|g|` (never overflows).
    #[inline(always)]
    fn call(self) {
        use pulp::Simd;
        let Self {
            simd,
            gate,
            up,
            out,
        } = self;
        let (gate_vectors, gate_tail) = gate.as_chunks::<8>();
        let (up_vectors, up_tail) = up.as_chunks::<8>();
        let (out_vectors, out_tail) = out.as_chunks_mut::<8>();
        let one = simd.splat_f32x8(1.);
        let zero = simd.splat_f32x8(0.);
        for ((g, u), o) in gate_vectors.iter().zip(up_vectors).zip(out_vectors) {
            let g: pulp::f32x8 = pulp::cast(*g);
            // The polynomial takes arguments ≤ 0, so e = e^−|g| and
            // sigmoid(g) = 1 / (1 + e) for g ≥ 0, e / (1 + e) for g < 0.
            let magnitude = simd.abs_f32x8(g);
            let e = crate::cpu_attention::simd_softmax::exp(simd, simd.sub_f32s(zero, magnitude));
            let denominator = simd.add_f32s(one, e);
            let negative = simd.less_than_f32s(g, zero);
            let numerator = simd.select_f32s(negative, e, one);
            let sigmoid = simd.div_f32s(numerator, denominator);
            let value = simd.mul_f32s(simd.mul_f32s(g, sigmoid), pulp::cast(*u));
            *o = pulp::cast(value);
        }
        for ((g, u), o) in gate_tail.iter().zip(up_tail).zip(out_tail) {
            *o = g / (1. + (-g).exp()) * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_candle_silu_times_up() {
        // 8 · 3 + 5 elements: the vector loop and the scalar tail, with gates from −100 to 100.
        let gate: Vec<f32> = (0..29).map(|i| (i as f32 - 14.) * 7.1).collect();
        let up: Vec<f32> = (0..29).map(|i| 1.5 - i as f32 * 0.1).collect();
        let gate = Tensor::from_vec(gate, (29,), &Device::Cpu).expect("gate");
        let up = Tensor::from_vec(up, (29,), &Device::Cpu).expect("up");
        let Some(fused) = super::swiglu(&gate, &up).expect("swiglu") else {
            return;
        };
        let reference = (candle_nn::ops::silu(&gate).expect("silu") * &up).expect("product");
        let fused: Vec<f32> = fused.to_vec1().expect("values");
        let reference: Vec<f32> = reference.to_vec1().expect("values");
        for (got, want) in fused.iter().zip(&reference) {
            assert!(
                // Below e^−87 the polynomial stops at ~1e-38 where libm goes on to 0.
                (got - want).abs() <= 4. * f32::EPSILON * want.abs() + 1e-30,
                "{got} against {want}"
            );
        }
    }
}
