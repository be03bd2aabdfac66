//! The notebook's classification head, found by structure from the model's output backwards:
//! `GlobalAveragePooling2D → Dense(hidden, relu) → Dropout → Dense(1, sigmoid)` on the
//! backbone's last layer. Layer names are not used: Keras numbers them per Python process
//! (`dense`/`dense_1` in one session, `dense_2`/`dense_3` in the next).

use super::graph::{Graph, Layer};
use super::resnet::LAST_LAYER;
use serde_json::Value;
use std::collections::HashSet;

/// The head found in a graph.
#[derive(Debug)]
pub(crate) struct Head {
    /// The hidden `Dense(hidden, relu)` layer.
    pub dense: String,
    /// Its width.
    pub hidden: usize,
    /// The dropout rate after it (0 without a `Dropout` layer).
    pub dropout: f32,
    /// The output `Dense(1)` layer (sigmoid, in the layer or in an `Activation` after it).
    pub logit: String,
    /// Every layer of the head.
    pub layers: HashSet<String>,
}

const EXPECTED: &str = "GlobalAveragePooling2D → Dense(hidden, relu) → Dropout → Dense(1, sigmoid)";

/// The one layer `layer` reads from.
fn single_input<'g>(graph: &'g Graph, layer: &Layer) -> Result<&'g Layer, String> {
    match layer.inputs.as_slice() {
        [one] => graph.layer(one).ok_or_else(|| {
            format!(
                "layer {} reads `{one}`, which is not in the model",
                layer.describe()
            )
        }),
        other => Err(format!(
            "layer {} reads {} inputs {other:?}; the notebook's head is a chain ({EXPECTED})",
            layer.describe(),
            other.len()
        )),
    }
}

fn unexpected(layer: &Layer, place: &str) -> String {
    format!(
        "unexpected layer {} {place}; the notebook's head is {EXPECTED} on `{LAST_LAYER}`",
        layer.describe()
    )
}

fn has_bias(layer: &Layer) -> Result<(), String> {
    match layer.get("use_bias").and_then(Value::as_bool) {
        Some(false) => Err(format!(
            "layer {} has no bias; the notebook's Dense layers do",
            layer.describe()
        )),
        _ => Ok(()),
    }
}

/// Walk back from the model's single output to the backbone's last layer.
pub(crate) fn find(graph: &Graph) -> Result<Head, String> {
    let output = match graph.outputs.as_slice() {
        [one] => one,
        [] => return Err("the model config names no output layer".into()),
        more => {
            return Err(format!(
                "the model has {} outputs {more:?}; expected one",
                more.len()
            ))
        }
    };
    let mut layer = graph
        .layer(output)
        .ok_or_else(|| format!("the output layer `{output}` is not in the model"))?;
    let mut layers = HashSet::new();
    let mut separate_sigmoid = false;
    if layer.class == "Activation" && layer.text("activation") == Some("sigmoid") {
        layers.insert(layer.name.clone());
        separate_sigmoid = true;
        layer = single_input(graph, layer)?;
    }
    if layer.class != "Dense" {
        return Err(unexpected(layer, "at the output"));
    }
    let units = layer.number("units");
    let activation = layer.text("activation");
    match (units, activation, separate_sigmoid) {
        (Some(1), Some("sigmoid"), false) | (Some(1), Some("linear") | None, true) => {}
        (Some(2), Some("softmax"), _) => {
            return Err(format!(
                "the output layer {} is a two-unit softmax head (Dense(2, softmax), one probability \
                 per class); this import reads the notebook's one-unit sigmoid head Dense(1, sigmoid)",
                layer.describe()
            ))
        }
        (units, activation, _) => {
            return Err(format!(
                "the output layer {} is Dense({}, {}); the notebook's is Dense(1, sigmoid)",
                layer.describe(),
                units.map_or("?".into(), |u| u.to_string()),
                activation.unwrap_or("?")
            ))
        }
    }
    has_bias(layer)?;
    let logit = layer.name.clone();
    layers.insert(logit.clone());
    let mut previous = single_input(graph, layer)?;
    let mut dropout = None;
    while previous.class == "Dropout" {
        let rate = previous.get("rate").and_then(Value::as_f64).unwrap_or(0.0);
        if !(0.0..1.0).contains(&rate) {
            return Err(format!(
                "layer {} has dropout rate {rate}",
                previous.describe()
            ));
        }
        // The rate of the Dropout right after the hidden layer (the last one met going back).
        dropout = Some(rate as f32);
        layers.insert(previous.name.clone());
        previous = single_input(graph, previous)?;
    }
    let dense = previous;
    if dense.class != "Dense" {
        return Err(unexpected(dense, &format!("before `{logit}`")));
    }
    if dense.text("activation") != Some("relu") {
        return Err(format!(
            "unexpected layer {} before `{logit}`: its activation is {}, the notebook's hidden \
             layer is Dense(hidden, relu)",
            dense.describe(),
            dense.text("activation").unwrap_or("unset")
        ));
    }
    has_bias(dense)?;
    let hidden = dense
        .number("units")
        .and_then(|u| usize::try_from(u).ok())
        .filter(|&u| u > 0)
        .ok_or_else(|| format!("layer {} has no positive `units`", dense.describe()))?;
    layers.insert(dense.name.clone());
    let pool = single_input(graph, dense)?;
    let keeps_dims = pool.get("keepdims").and_then(Value::as_bool) == Some(true);
    if pool.class != "GlobalAveragePooling2D" || keeps_dims {
        return Err(unexpected(pool, &format!("before `{}`", dense.name)));
    }
    layers.insert(pool.name.clone());
    let features = single_input(graph, pool)?;
    if features.name != LAST_LAYER {
        return Err(unexpected(features, &format!("before `{}`", pool.name)));
    }
    Ok(Head {
        dense: dense.name.clone(),
        hidden,
        dropout: dropout.unwrap_or(0.0),
        logit,
        layers,
    })
}
