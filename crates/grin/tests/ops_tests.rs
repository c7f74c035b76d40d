//! The fused kernels of `grin::ops` against their compositions from candle
//! primitives (`grin::ops::composed`): same values, same gradients, in f64
//! (tight) and f32 (float rounding), on shapes big enough to run the
//! multi-threaded split and on odd ones. Plus the in-place AdamW against
//! PyTorch's update rule written out in f64.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use grin::ops::{self, composed};
use grin::train::{AdamW, AdamWConfig, Schedule};

const CPU: Device = Device::Cpu;

fn randn(shape: &[usize], dtype: DType, seed: u64) -> Result<Tensor> {
    // A deterministic pseudo-normal fill (no global RNG state in tests).
    let n: usize = shape.iter().product();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let mut u = 0.0;
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                u += (x >> 11) as f64 / (1u64 << 53) as f64;
            }
            (u - 2.0) * 1.7
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, &CPU)?.to_dtype(dtype)?)
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a: Vec<f64> = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let b: Vec<f64> = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
    Ok(a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale)
}

fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        _ => 2e-5,
    }
}

/// Forward values and the gradients of `sum(out · r)` with respect to each
/// input, for the fused and the composed function, compared.
fn check<F, G>(name: &str, inputs: &[Tensor], fused: F, reference: G) -> Result<()>
where
    F: Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    G: Fn(&[Tensor]) -> candle_core::Result<Tensor>,
{
    let dtype = inputs[0].dtype();
    let run = |f: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>| -> Result<(Tensor, Vec<Tensor>)> {
        let vars: Vec<Var> = inputs
            .iter()
            .map(Var::from_tensor)
            .collect::<candle_core::Result<_>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&ts)?;
        let r = randn(out.dims(), out.dtype(), 99)?;
        let grads = (&out * &r)?.sum_all()?.backward()?;
        let gs = ts
            .iter()
            .map(|t| grads.get(t).cloned().expect("every input gets a gradient"))
            .collect();
        Ok((out, gs))
    };
    let (out_f, grads_f) = run(&fused)?;
    let (out_c, grads_c) = run(&reference)?;
    assert_eq!(out_f.dims(), out_c.dims(), "{name}: output shape");
    let d = max_rel_diff(&out_f, &out_c)?;
    assert!(d < tol(dtype), "{name} {dtype:?}: forward differs by {d:e}");
    for (i, (gf, gc)) in grads_f.iter().zip(&grads_c).enumerate() {
        assert_eq!(gf.dims(), gc.dims(), "{name}: gradient {i} shape");
        let d = max_rel_diff(gf, gc)?;
        assert!(
            d < 5.0 * tol(dtype),
            "{name} {dtype:?}: gradient of input {i} differs by {d:e}"
        );
    }
    Ok(())
}

#[test]
fn rms_norm_matches_composed() -> Result<()> {
    for dtype in [DType::F64, DType::F32] {
        // 3 x 130 rows of 128: above the threshold for the threaded split.
        for (shape, d) in [(vec![3, 130, 128], 128), (vec![2, 5, 7], 7)] {
            let x = randn(&shape, dtype, 1)?;
            let w = (randn(&[d], dtype, 2)? + 1.0)?;
            check(
                "rms_norm",
                &[x, w],
                |t| ops::rms_norm(&t[0], &t[1], 1e-5),
                |t| composed::rms_norm(&t[0], &t[1], 1e-5),
            )?;
        }
    }
    Ok(())
}

#[test]
fn attn_softmax_matches_composed_with_and_without_mask() -> Result<()> {
    for dtype in [DType::F64, DType::F32] {
        for (b, h, t, tk) in [(4, 4, 64, 64), (1, 3, 5, 9)] {
            let x = randn(&[b, h, t, tk], dtype, 3)?;
            let offset = tk - t;
            let mask: Vec<f64> = (0..t * tk)
                .map(|i| {
                    if i % tk > i / tk + offset {
                        f64::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, (t, tk), &CPU)?.to_dtype(dtype)?;
            check(
                "attn_softmax+mask",
                std::slice::from_ref(&x),
                |a| ops::attn_softmax(&a[0], 0.25, Some(&mask)),
                |a| composed::attn_softmax(&a[0], 0.25, Some(&mask)),
            )?;
            check(
                "attn_softmax",
                &[x],
                |a| ops::attn_softmax(&a[0], 1.0, None),
                |a| composed::attn_softmax(&a[0], 1.0, None),
            )?;
        }
    }
    Ok(())
}

#[test]
fn masked_positions_get_exactly_zero_probability() -> Result<()> {
    let x = randn(&[2, 4, 4], DType::F32, 4)?;
    let mask: Vec<f32> = (0..16)
        .map(|i| if i % 4 > i / 4 { f32::NEG_INFINITY } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, (4, 4), &CPU)?;
    let p: Vec<f32> = ops::attn_softmax(&x, 1.0, Some(&mask))?.flatten_all()?.to_vec1()?;
    for (i, v) in p.iter().enumerate() {
        let (q, k) = ((i / 4) % 4, i % 4);
        if k > q {
            assert_eq!(*v, 0.0, "entry {i}");
        }
    }
    for row in p.chunks(4) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
    Ok(())
}

#[test]
fn rope_to_heads_matches_composed() -> Result<()> {
    for dtype in [DType::F64, DType::F32] {
        for (b, t, h, d, offset) in [(4, 64, 4, 32, 0), (1, 3, 2, 8, 5)] {
            let x = randn(&[b, t, h, d], dtype, 5)?;
            let positions = offset + t;
            let angles: Vec<f64> = (0..positions)
                .flat_map(|p| (0..d / 2).map(move |i| p as f64 / 10000f64.powf(2.0 * i as f64 / d as f64)))
                .collect();
            let angles = Tensor::from_vec(angles, (positions, d / 2), &CPU)?;
            let cos = angles.cos()?.to_dtype(dtype)?.narrow(0, offset, t)?;
            let sin = angles.sin()?.to_dtype(dtype)?.narrow(0, offset, t)?;
            check(
                "rope_to_heads",
                &[x],
                |a| ops::rope_to_heads(&a[0], &cos, &sin),
                |a| composed::rope_to_heads(&a[0], &cos, &sin),
            )?;
        }
    }
    Ok(())
}

#[test]
fn silu_mul_matches_composed() -> Result<()> {
    for dtype in [DType::F64, DType::F32] {
        // A multiple of the 256-element rows (threaded) and an odd size.
        for shape in [vec![8, 64, 256], vec![3, 7, 11]] {
            let a = randn(&shape, dtype, 6)?;
            let b = randn(&shape, dtype, 7)?;
            check(
                "silu_mul",
                &[a, b],
                |t| ops::silu_mul(&t[0], &t[1]),
                |t| composed::silu_mul(&t[0], &t[1]),
            )?;
        }
    }
    Ok(())
}

#[test]
fn cross_entropy_matches_composed() -> Result<()> {
    for dtype in [DType::F64, DType::F32] {
        for (b, t, v) in [(8, 64, 301), (1, 3, 5)] {
            let logits = (randn(&[b, t, v], dtype, 8)? * 3.0)?;
            let targets: Vec<u32> = (0..b * t).map(|i| (i * 7919 % v) as u32).collect();
            let targets = Tensor::from_vec(targets, (b, t), &CPU)?;
            check(
                "cross_entropy",
                &[logits],
                |a| ops::cross_entropy(&a[0], &targets),
                |a| composed::cross_entropy(&a[0], &targets),
            )?;
        }
    }
    Ok(())
}

#[test]
fn cross_entropy_refuses_a_target_out_of_range() -> Result<()> {
    let logits = randn(&[1, 2, 4], DType::F32, 9)?;
    let targets = Tensor::from_vec(vec![1u32, 4], (1, 2), &CPU)?;
    let err = ops::cross_entropy(&logits, &targets).unwrap_err().to_string();
    assert!(err.contains("out of range"), "{err}");
    Ok(())
}

#[test]
fn linear_matches_composed_and_skips_frozen_weights() -> Result<()> {
    for dtype in [DType::F64, DType::F32] {
        let x = randn(&[96, 48], dtype, 10)?;
        let w = randn(&[80, 48], dtype, 11)?;
        check(
            "linear",
            &[x.clone(), w.clone()],
            |t| ops::linear(&t[0], &t[1]),
            |t| composed::linear(&t[0], &t[1]),
        )?;
        // A frozen (detached) weight gets no gradient and costs no matmul;
        // the input's gradient is unchanged.
        let xv = Var::from_tensor(&x)?;
        let frozen = w.detach();
        let grads = ops::linear(xv.as_tensor(), &frozen)?.sum_all()?.backward()?;
        assert!(grads.get(&frozen).is_none());
        let expected = Tensor::ones((96, 80), dtype, &CPU)?.matmul(&w)?;
        let got = grads.get(xv.as_tensor()).expect("input gradient");
        assert!(max_rel_diff(got, &expected)? < tol(dtype));
        // The gradient is a plain tensor: it holds no graph (and so no
        // activation) alive.
        assert!(!got.track_op());
    }
    Ok(())
}

#[test]
fn unsupported_dtypes_fall_back_to_the_composed_path() -> Result<()> {
    let x = randn(&[2, 3, 8], DType::BF16, 12)?;
    let w = Tensor::ones(8, DType::BF16, &CPU)?;
    let fused = ops::rms_norm(&x, &w, 1e-6)?;
    let reference = composed::rms_norm(&x, &w, 1e-6)?;
    assert_eq!(max_rel_diff(&fused, &reference)?, 0.0);
    let v = Var::from_tensor(&x)?;
    let grads = ops::silu_mul(v.as_tensor(), v.as_tensor())?.sum_all()?.backward()?;
    assert!(grads.get(v.as_tensor()).is_some());
    Ok(())
}

/// PyTorch's AdamW (torch.optim.AdamW, no amsgrad), in f64.
fn reference_adamw(w: &mut [f64], grads: &[Vec<f64>], cfg: &AdamWConfig, lr: f64, mask: Option<&[bool]>) {
    let n = w.len();
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    for (step, g) in grads.iter().enumerate() {
        let t = (step + 1) as i32;
        let g: Vec<f64> = (0..n)
            .map(|i| if mask.is_none_or(|m| m[i]) { g[i] } else { 0.0 })
            .collect();
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        let clip = match cfg.max_grad_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        for i in 0..n {
            if !mask.is_none_or(|m| m[i]) {
                continue;
            }
            let gi = g[i] * clip;
            m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * gi;
            v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * gi * gi;
            let mh = m[i] / (1.0 - cfg.beta1.powi(t));
            let vh = v[i] / (1.0 - cfg.beta2.powi(t));
            w[i] = w[i] * (1.0 - lr * cfg.weight_decay) - lr * mh / (vh.sqrt() + cfg.eps);
        }
    }
}

#[test]
fn adamw_matches_pytorch_rule_and_keeps_unmasked_bits() -> Result<()> {
    let cfg = AdamWConfig {
        lr: 1e-2,
        weight_decay: 0.1,
        warmup_steps: 0,
        schedule: Schedule::Constant,
        max_grad_norm: Some(0.5),
        ..AdamWConfig::default()
    };
    // Large enough for the threaded split of the update.
    let (rows, cols) = (300, 257);
    let n = rows * cols;
    let w0 = randn(&[rows, cols], DType::F64, 13)?;
    let grads: Vec<Tensor> = (0..3)
        .map(|s| randn(&[rows, cols], DType::F64, 20 + s))
        .collect::<Result<_>>()?;
    let grads_v: Vec<Vec<f64>> = grads
        .iter()
        .map(|g| g.flatten_all().and_then(|g| g.to_vec1()))
        .collect::<candle_core::Result<_>>()?;
    let mask_flags: Vec<bool> = (0..n).map(|i| (i * 2654435761) % 7 == 0).collect();
    for dtype in [DType::F64, DType::F32] {
        for masked in [false, true] {
            let var = Var::from_tensor(&w0.to_dtype(dtype)?)?;
            let mask = masked.then(|| {
                let m: Vec<u8> = mask_flags.iter().map(|&b| b as u8).collect();
                Tensor::from_vec(m, (rows, cols), &CPU).unwrap()
            });
            let mut opt = AdamW::new(vec![(var.clone(), mask)], cfg.clone())?;
            let before: Vec<f64> = var.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
            for g in &grads {
                // Through a real backward pass, so the store holds the gradient.
                let loss = (var.as_tensor() * g.to_dtype(dtype)?)?.sum_all()?;
                let mut store = loss.backward()?;
                if masked {
                    opt.step_consuming(&mut store, cfg.lr)?;
                    assert!(store.get(var.as_tensor()).is_none(), "gradient freed once applied");
                } else {
                    opt.step(&store, cfg.lr)?;
                }
            }
            let mut expected = w0.flatten_all()?.to_vec1::<f64>()?;
            reference_adamw(&mut expected, &grads_v, &cfg, cfg.lr, masked.then_some(&mask_flags[..]));
            let got: Vec<f64> = var.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            for i in 0..n {
                assert!(
                    (got[i] - expected[i]).abs() < tol,
                    "{dtype:?} masked={masked} entry {i}: {} vs {}",
                    got[i],
                    expected[i]
                );
                if masked && !mask_flags[i] {
                    assert_eq!(got[i].to_bits(), before[i].to_bits(), "unmasked entry {i} changed");
                }
            }
            // State for the masked entries only: 4-byte index + two moments.
            let selected = mask_flags.iter().filter(|&&b| b).count();
            let per = if dtype == DType::F64 { 20 } else { 12 };
            let expected_bytes = if masked { selected * per } else { n * (per - 4) };
            assert_eq!(opt.state_bytes(), expected_bytes);
        }
    }
    Ok(())
}

#[test]
fn adamw_updates_bf16_weights() -> Result<()> {
    let var = Var::from_tensor(&Tensor::ones((4, 4), DType::BF16, &CPU)?)?;
    let mut opt = AdamW::new(vec![(var.clone(), None)], AdamWConfig::default())?;
    let loss = var.as_tensor().to_dtype(DType::F32)?.sum_all()?;
    let grads = loss.backward()?;
    opt.step(&grads, 0.1)?;
    let w: Vec<f32> = var.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    // The first Adam step moves every entry by about lr against the sign of
    // the gradient.
    for x in w {
        assert!((x - 0.9).abs() < 0.01, "{x}");
    }
    Ok(())
}
