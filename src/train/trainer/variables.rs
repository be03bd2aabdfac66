//! The trainer's variables: reading a `VarMap`, checking a given backbone, initialising the
//! head, and which variables the backbone's optimizer gets.

use crate::error::{Error, Result};
use crate::model::{init_variables, BackboneConfig, HeadConfig};
use crate::train::adam::Adam;
use crate::train::config::{BackboneTraining, TrainConfig};
use candle_core::{Device, Var};
use candle_nn::VarMap;
use std::collections::{HashMap, HashSet};

/// The backbone learning rate the configuration asks for, if the backbone trains.
pub(super) fn backbone_learning_rate(mode: &BackboneTraining) -> Option<f64> {
    match mode {
        BackboneTraining::Frozen => None,
        BackboneTraining::LastStages { learning_rate, .. }
        | BackboneTraining::All { learning_rate } => Some(*learning_rate),
    }
}

/// The variables of a `VarMap`, sorted by name.
pub(super) fn named_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Training("a variable map's lock is poisoned".into()))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// An empty map, or one holding exactly the backbone's variables with the right shapes on
/// `device`.
pub(super) fn check_backbone_vars(
    config: &BackboneConfig,
    varmap: &VarMap,
    device: &Device,
) -> Result<()> {
    let vars = named_vars(varmap)?;
    if vars.is_empty() {
        return Ok(());
    }
    let expected: HashMap<String, Vec<usize>> = config
        .variables()
        .into_iter()
        .map(|v| (v.name, v.shape))
        .collect();
    let mut problems = Vec::new();
    for (name, var) in &vars {
        match expected.get(name) {
            None => problems.push(format!("unexpected variable {name}")),
            Some(shape) if shape.as_slice() != var.dims() => problems.push(format!(
                "{name} has shape {:?}, expected {shape:?}",
                var.dims()
            )),
            Some(_) => {}
        }
        if !var.device().same_device(device) {
            problems.push(format!("{name} is on another device than the trainer"));
        }
    }
    let present: HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let mut missing: Vec<&str> = expected
        .keys()
        .map(String::as_str)
        .filter(|n| !present.contains(n))
        .collect();
    missing.sort_unstable();
    if let Some(first) = missing.first() {
        problems.push(format!(
            "{} variables missing (first: {first})",
            missing.len()
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    problems.truncate(10);
    Err(Error::Weights {
        source_name: "backbone VarMap".into(),
        message: problems.join("; "),
    })
}

/// Keras's initialisation of the head's variables ([`init_variables`]), from `seed`.
pub(super) fn init_head(
    head_vars: &VarMap,
    head: &HeadConfig,
    in_features: usize,
    seed: u64,
    device: &Device,
) -> Result<()> {
    let vars: HashMap<String, Var> = named_vars(head_vars)?.into_iter().collect();
    for (name, value) in init_variables(&head.variables(in_features), seed, device)? {
        let var = vars.get(&name).ok_or_else(|| {
            Error::Internal(format!("the head has no variable {name} to initialise"))
        })?;
        var.set(&value)?;
    }
    Ok(())
}

/// The optimizer of the trained backbone variables (none when frozen). BN moving
/// statistics are never optimized.
pub(super) fn backbone_optimizer(
    config: &TrainConfig,
    backbone_config: &BackboneConfig,
    backbone_vars: &VarMap,
) -> Result<Option<Adam>> {
    let prefixes: Option<Vec<String>> = match &config.backbone {
        BackboneTraining::Frozen => return Ok(None),
        BackboneTraining::All { .. } => None,
        BackboneTraining::LastStages { stages, .. } => {
            Some(backbone_config.last_stage_prefixes(*stages)?)
        }
    };
    let trained = named_vars(backbone_vars)?
        .into_iter()
        .filter(|(name, _)| !name.ends_with(".running_mean") && !name.ends_with(".running_var"))
        .filter(|(name, _)| {
            prefixes
                .as_ref()
                .is_none_or(|p| p.iter().any(|prefix| name.starts_with(prefix.as_str())))
        })
        .collect();
    let learning_rate = backbone_learning_rate(&config.backbone).unwrap_or(config.learning_rate);
    Ok(Some(Adam::new(trained, config.adam, learning_rate)?))
}
