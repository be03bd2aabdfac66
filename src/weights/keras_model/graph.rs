//! A saved Keras model's configuration (`model_config` / `config.json`) as a graph of layers:
//! name, class, the layer's own settings and the layers it reads from. Keras 2 and Keras 3
//! write the connections differently; both become [`Layer::inputs`].

use serde_json::Value;
use std::collections::HashMap;

/// One layer of a functional model.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// The layer's name (`conv1_conv`, `dense_1`).
    pub name: String,
    /// Its Keras class (`Conv2D`, `BatchNormalization`, `Dense`, ...).
    pub class: String,
    /// The layer's `config` object (filters, strides, activation, ...).
    pub config: Value,
    /// The layers it reads from, in argument order.
    pub inputs: Vec<String>,
}

impl Layer {
    /// A field of the layer's settings.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.config.get(key)
    }

    /// A string setting (`activation`, `padding`, `data_format`).
    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// A whole-number setting (`filters`, `units`).
    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// A two-number setting (`kernel_size`, `strides`, `pool_size`): `[a, b]`, or `a` for both.
    pub fn pair(&self, key: &str) -> Option<(u64, u64)> {
        pair(self.get(key)?)
    }

    /// `name (Class)`, how a layer is named in messages.
    pub fn describe(&self) -> String {
        format!("`{}` ({})", self.name, self.class)
    }
}

/// `[a, b]` or a single `a`.
pub(crate) fn pair(value: &Value) -> Option<(u64, u64)> {
    match value {
        Value::Array(items) => match items.as_slice() {
            [a, b] => Some((a.as_u64()?, b.as_u64()?)),
            _ => None,
        },
        other => other.as_u64().map(|a| (a, a)),
    }
}

/// A functional model: its layers in the saved order, by name.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    /// The model class (`Functional`, `Model`, `Sequential`).
    pub class: String,
    pub layers: Vec<Layer>,
    index: HashMap<String, usize>,
    /// The layers whose outputs are the model's outputs.
    pub outputs: Vec<String>,
}

impl Graph {
    /// Parse a model configuration (`{"class_name": ..., "config": {"layers": [...], ...}}`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| format!("the model config is not JSON: {e}"))?;
        let class = json
            .get("class_name")
            .and_then(Value::as_str)
            .ok_or("the model config has no `class_name`")?
            .to_string();
        let config = json
            .get("config")
            .ok_or("the model config has no `config` object")?;
        let saved_layers = config
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("the model config ({class}) has no `layers` list"))?;
        let mut layers = Vec::with_capacity(saved_layers.len());
        let mut index = HashMap::new();
        for (position, saved) in saved_layers.iter().enumerate() {
            let layer = parse_layer(saved).map_err(|e| format!("layer {position}: {e}"))?;
            if index.insert(layer.name.clone(), layers.len()).is_some() {
                return Err(format!("two layers are named `{}`", layer.name));
            }
            layers.push(layer);
        }
        let outputs = config
            .get("output_layers")
            .map(history_names)
            .unwrap_or_default();
        Ok(Self {
            class,
            layers,
            index,
            outputs,
        })
    }

    /// The layer named `name`.
    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.index.get(name).and_then(|&i| self.layers.get(i))
    }
}

fn parse_layer(saved: &Value) -> Result<Layer, String> {
    let class = saved
        .get("class_name")
        .and_then(Value::as_str)
        .ok_or("no `class_name`")?
        .to_string();
    let config = saved.get("config").cloned().unwrap_or(Value::Null);
    let name = saved
        .get("name")
        .or_else(|| config.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a {class} layer without a name"))?
        .to_string();
    let nodes = match saved.get("inbound_nodes") {
        Some(Value::Array(nodes)) => nodes.as_slice(),
        _ => &[],
    };
    let inputs = match nodes {
        [] => Vec::new(),
        [node] => node_inputs(node),
        more => {
            return Err(format!(
                "layer `{name}` is called {} times (a shared layer)",
                more.len()
            ))
        }
    };
    Ok(Layer {
        name,
        class,
        config,
        inputs,
    })
}

/// The input layers of one call: Keras 3 writes `{"args": [...], "kwargs": {...}}` with
/// `__keras_tensor__` objects carrying `keras_history: [layer, node, tensor]`; Keras 2 writes a
/// list of `[layer, node, tensor, kwargs]`.
fn node_inputs(node: &Value) -> Vec<String> {
    let mut names = Vec::new();
    match node {
        Value::Object(call) => {
            for part in ["args", "kwargs"] {
                if let Some(value) = call.get(part) {
                    keras_tensors(value, &mut names);
                }
            }
        }
        Value::Array(entries) => {
            for entry in entries {
                if let Some(name) = entry.get(0).and_then(Value::as_str) {
                    names.push(name.to_string());
                }
            }
        }
        _ => {}
    }
    names
}

/// Every `keras_history` layer name inside a Keras 3 call argument, in order.
fn keras_tensors(value: &Value, names: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let history = map
                .get("config")
                .and_then(|c| c.get("keras_history"))
                .and_then(|h| h.get(0))
                .and_then(Value::as_str);
            match history {
                Some(name)
                    if map.get("class_name").and_then(Value::as_str)
                        == Some("__keras_tensor__") =>
                {
                    names.push(name.to_string())
                }
                _ => map.values().for_each(|v| keras_tensors(v, names)),
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keras_tensors(v, names)),
        _ => {}
    }
}

/// `["name", 0, 0]` or `[["name", 0, 0], ...]` → the names.
fn history_names(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => match items.first() {
            Some(Value::String(name)) => vec![name.clone()],
            _ => items
                .iter()
                .filter_map(|item| item.get(0).and_then(Value::as_str).map(str::to_string))
                .collect(),
        },
        _ => Vec::new(),
    }
}

/// The `(height, width, channels)` of the model's input layer, `None` for a dimension the
/// model leaves open.
pub(crate) type InputShape = (Option<u64>, Option<u64>, Option<u64>);

/// The input shape of an `InputLayer` (Keras 3 `batch_shape`, Keras 2 `batch_input_shape`).
pub(crate) fn input_shape(layer: &Layer) -> Option<InputShape> {
    let shape = layer
        .get("batch_shape")
        .or_else(|| layer.get("batch_input_shape"))?
        .as_array()?;
    match shape.as_slice() {
        [_, h, w, c] => Some((h.as_u64(), w.as_u64(), c.as_u64())),
        _ => None,
    }
}
