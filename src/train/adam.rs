//! Adam with Keras's update rule and moments that can be saved and restored exactly.
//!
//! candle's `AdamW` keeps its moments private, so a resumed run could not continue where an
//! interrupted one stopped; this small implementation exposes them for checkpoints.

use super::config::AdamConfig;
use crate::error::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

/// One named variable with its first and second moment.
#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// Adam over a fixed, named set of variables with one learning rate.
#[derive(Debug)]
pub(crate) struct Adam {
    slots: Vec<Slot>,
    config: AdamConfig,
    learning_rate: f64,
    step: u64,
}

impl Adam {
    /// An optimizer for `vars` (name, variable), sorted by name for a stable order.
    pub(crate) fn new(
        mut vars: Vec<(String, Var)>,
        config: AdamConfig,
        learning_rate: f64,
    ) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let m = var.as_tensor().zeros_like()?;
                let v = var.as_tensor().zeros_like()?;
                Ok(Slot { name, var, m, v })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            config,
            learning_rate,
            step: 0,
        })
    }

    pub(crate) fn set_learning_rate(&mut self, learning_rate: f64) {
        self.learning_rate = learning_rate;
    }

    pub(crate) fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    pub(crate) fn step_count(&self) -> u64 {
        self.step
    }

    /// Names of the variables this optimizer updates, sorted.
    pub(crate) fn variable_names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.name.clone()).collect()
    }

    /// One Keras Adam step: `lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)`,
    /// `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`, `w -= lr_t * m / (sqrt(v) + eps)`.
    /// A variable without a gradient is left alone (its moments too).
    pub(crate) fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let AdamConfig {
            beta1,
            beta2,
            epsilon,
        } = self.config;
        let t = self.step as f64;
        let lr_t = self.learning_rate * (1.0 - beta2.powf(t)).sqrt() / (1.0 - beta1.powf(t));
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let m = ((&slot.m * beta1)? + (&g * (1.0 - beta1))?)?;
            let v = ((&slot.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let update = ((&m * lr_t)? / (v.sqrt()? + epsilon)?)?;
            let w = (slot.var.as_tensor().detach() - update)?;
            slot.var.set(&w)?;
            slot.m = m.detach();
            slot.v = v.detach();
        }
        Ok(())
    }

    /// The moments as tensors named `m.{var}` and `v.{var}`, each prefixed with `prefix`.
    pub(crate) fn moments(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("{prefix}m.{}", s.name), s.m.clone()),
                    (format!("{prefix}v.{}", s.name), s.v.clone()),
                ]
            })
            .collect()
    }

    /// Restore the moments written by [`Adam::moments`] and the step count.
    pub(crate) fn restore(
        &mut self,
        prefix: &str,
        tensors: &HashMap<String, Tensor>,
        step: u64,
        file: &str,
    ) -> Result<()> {
        for slot in &mut self.slots {
            for (kind, target) in [("m", &mut slot.m), ("v", &mut slot.v)] {
                let name = format!("{prefix}{kind}.{}", slot.name);
                let t = tensors.get(&name).ok_or_else(|| Error::Format {
                    path: file.into(),
                    message: format!("optimizer state has no tensor {name}"),
                })?;
                if t.dims() != slot.var.dims() {
                    return Err(Error::Format {
                        path: file.into(),
                        message: format!(
                            "optimizer tensor {name} has shape {:?}, variable {} has {:?}",
                            t.dims(),
                            slot.name,
                            slot.var.dims()
                        ),
                    });
                }
                *target = t.to_device(slot.var.device())?.to_dtype(slot.var.dtype())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn first_step_moves_each_weight_by_about_the_learning_rate_against_its_gradient() {
        // After one step m = (1-b1) g and v = (1-b2) g^2, so the bias-corrected ratio is
        // g / |g|: every weight moves by lr (up to epsilon) opposite to its gradient's sign.
        let w = Var::new(&[1f32, 2.0, -3.0], &Device::Cpu).unwrap();
        let mut adam =
            Adam::new(vec![("w".into(), w.clone())], AdamConfig::default(), 0.01).unwrap();
        let coefficients = Tensor::new(&[5f32, -0.5, 2.0], &Device::Cpu).unwrap();
        let loss = (w.as_tensor() * &coefficients).unwrap().sum_all().unwrap();
        adam.step(&loss.backward().unwrap()).unwrap();
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        let want = [1.0 - 0.01, 2.0 + 0.01, -3.0 - 0.01];
        for (g, e) in got.iter().zip(want) {
            assert!((g - e).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn restored_moments_continue_exactly_like_the_original() {
        let make = || Var::new(&[0.5f32, -1.0], &Device::Cpu).unwrap();
        let grad_of = |w: &Var| {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            loss.backward().unwrap()
        };
        let (wa, wb) = (make(), make());
        let mut a = Adam::new(vec![("w".into(), wa.clone())], AdamConfig::default(), 0.1).unwrap();
        for _ in 0..3 {
            a.step(&grad_of(&wa)).unwrap();
        }
        wb.set(wa.as_tensor()).unwrap();
        let mut b = Adam::new(vec![("w".into(), wb.clone())], AdamConfig::default(), 0.1).unwrap();
        let saved: HashMap<String, Tensor> = a.moments("x.").into_iter().collect();
        b.restore("x.", &saved, a.step_count(), "mem").unwrap();
        a.step(&grad_of(&wa)).unwrap();
        b.step(&grad_of(&wb)).unwrap();
        assert_eq!(
            wa.as_tensor().to_vec1::<f32>().unwrap(),
            wb.as_tensor().to_vec1::<f32>().unwrap()
        );
    }
}
