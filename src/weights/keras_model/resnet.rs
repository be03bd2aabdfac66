//! Recognising Keras's ResNetV2 (`keras.applications.ResNet50V2/101V2/152V2` or the same code
//! with other stacks) in a model graph: the shape is read from Keras's layer names, then every
//! layer Keras would build for that shape is checked (class, settings, inputs), so that a model
//! that merely reuses the names is not taken for one.

use super::graph::{pair, Graph, Layer};
use crate::model::ResNetV2Config;
use serde_json::Value;
use std::collections::HashSet;

/// The backbone found in a graph.
#[derive(Debug)]
pub(crate) struct Backbone {
    pub config: ResNetV2Config,
    /// Every layer that belongs to it (the unnamed shortcut max-pools included).
    pub layers: HashSet<String>,
}

/// The backbone's last layer, what the head reads.
pub(crate) const LAST_LAYER: &str = "post_relu";

/// What a layer of Keras's ResNetV2 is, with the settings that matter.
#[derive(Debug)]
enum Spec {
    Pad(u64),
    Conv {
        filters: u64,
        kernel: u64,
        stride: u64,
        bias: bool,
    },
    BatchNorm,
    Relu,
    MaxPool {
        pool: u64,
        stride: u64,
    },
    Add,
}

impl Spec {
    fn class(&self) -> &'static str {
        match self {
            Spec::Pad(_) => "ZeroPadding2D",
            Spec::Conv { .. } => "Conv2D",
            Spec::BatchNorm => "BatchNormalization",
            Spec::Relu => "Activation",
            Spec::MaxPool { .. } => "MaxPooling2D",
            Spec::Add => "Add",
        }
    }
}

/// Where a layer's input comes from.
#[derive(Debug)]
enum Source {
    Named(String),
    /// Keras's unnamed `MaxPooling2D(1, strides=stride)` shortcut on `of` (its name is a
    /// per-process counter, `max_pooling2d_3`): found by structure.
    ShortcutPool {
        of: String,
        stride: u64,
    },
}

struct Expected {
    name: String,
    spec: Spec,
    inputs: Vec<Source>,
}

/// Find Keras's ResNetV2 fed by the input layer `input` and check it layer by layer.
pub(crate) fn find(graph: &Graph, input: &str, in_channels: usize) -> Result<Backbone, String> {
    let config = derive_config(graph, in_channels)?;
    config
        .validate()
        .map_err(|e| format!("the ResNetV2 read from the layer names cannot be built: {e}"))?;
    let epsilon = config.bn_epsilon;
    let mut layers = HashSet::new();
    for expected in expected_layers(&config, input) {
        let layer = graph.layer(&expected.name).ok_or_else(|| {
            format!(
                "missing layer `{}` ({}) of Keras's ResNetV2 {:?}",
                expected.name,
                expected.spec.class(),
                config.blocks
            )
        })?;
        check_layer(layer, &expected.spec, epsilon)?;
        check_inputs(graph, layer, &expected.inputs, &mut layers)?;
        layers.insert(expected.name);
    }
    Ok(Backbone { config, layers })
}

fn number(graph: &Graph, name: &str, key: &str) -> Result<u64, String> {
    graph
        .layer(name)
        .and_then(|l| l.number(key))
        .ok_or_else(|| format!("layer `{name}` is missing or has no `{key}`"))
}

fn usize_of(value: u64, what: &str) -> Result<usize, String> {
    usize::try_from(value).map_err(|_| format!("{what} {value} is too large"))
}

/// The stacks, widths and strides that Keras's layer names and settings describe.
fn derive_config(graph: &Graph, in_channels: usize) -> Result<ResNetV2Config, String> {
    let stem = graph
        .layer("conv1_conv")
        .filter(|l| l.class == "Conv2D")
        .ok_or_else(|| {
            let first: Vec<String> = graph.layers.iter().take(4).map(Layer::describe).collect();
            format!(
                "not a Keras ResNetV2 backbone: no Conv2D layer `conv1_conv`; the model starts \
                 with {}",
                first.join(", ")
            )
        })?;
    let (mut blocks, mut filters, mut strides) = (Vec::new(), Vec::new(), Vec::new());
    let mut expansion = None;
    for stack in 2usize.. {
        let block = |b: usize, layer: &str| format!("conv{stack}_block{b}_{layer}");
        if graph.layer(&block(1, "preact_bn")).is_none() {
            break;
        }
        let count = (1usize..)
            .take_while(|&b| graph.layer(&block(b, "preact_bn")).is_some())
            .count();
        let width = number(graph, &block(1, "1_conv"), "filters")?;
        let out = number(graph, &block(1, "3_conv"), "filters")?;
        let ratio = (width > 0 && out % width == 0)
            .then(|| out / width)
            .ok_or_else(|| {
                format!(
                    "`{}` has {out} filters, not a multiple of {width}",
                    block(1, "3_conv")
                )
            })?;
        if expansion.is_some_and(|e| e != ratio) {
            return Err(format!(
                "stack conv{stack} widens by {ratio}, the stacks before by {expansion:?}"
            ));
        }
        expansion = Some(ratio);
        let last = block(count, "2_conv");
        let stride = graph
            .layer(&last)
            .and_then(|l| l.pair("strides"))
            .ok_or_else(|| format!("layer `{last}` is missing or has no strides"))?;
        blocks.push(count);
        filters.push(usize_of(width, "width")?);
        strides.push(usize_of(stride.0, "stride")?);
    }
    if blocks.is_empty() {
        return Err(
            "not a Keras ResNetV2 backbone: `conv1_conv` is there but no \
                    `conv2_block1_preact_bn`"
                .into(),
        );
    }
    let post_bn = graph
        .layer("post_bn")
        .ok_or("not a Keras ResNetV2 backbone: no `post_bn` layer")?;
    let mut config = ResNetV2Config::custom(blocks, filters);
    config.strides = strides;
    config.stem_filters = usize_of(number(graph, &stem.name, "filters")?, "stem width")?;
    config.expansion = usize_of(expansion.unwrap_or(4), "expansion")?;
    config.in_channels = in_channels;
    config.bn_epsilon = post_bn
        .get("epsilon")
        .and_then(Value::as_f64)
        .ok_or("`post_bn` has no epsilon")?;
    if let Some(momentum) = post_bn.get("momentum").and_then(Value::as_f64) {
        config.bn_momentum = momentum;
    }
    Ok(config)
}

/// Every layer Keras's `ResNet(stack_fn, preact=True, use_bias=True)` builds for `config`, in
/// order, fed by the input layer `input`.
fn expected_layers(config: &ResNetV2Config, input: &str) -> Vec<Expected> {
    let mut out = Vec::new();
    let mut push = |name: &str, spec: Spec, inputs: Vec<Source>| {
        out.push(Expected {
            name: name.to_string(),
            spec,
            inputs,
        })
    };
    let named = |n: &str| vec![Source::Named(n.to_string())];
    let conv = |filters: usize, kernel: u64, stride: usize, bias: bool| Spec::Conv {
        filters: filters as u64,
        kernel,
        stride: stride as u64,
        bias,
    };
    push("conv1_pad", Spec::Pad(3), named(input));
    push(
        "conv1_conv",
        conv(config.stem_filters, 7, 2, true),
        named("conv1_pad"),
    );
    push("pool1_pad", Spec::Pad(1), named("conv1_conv"));
    push(
        "pool1_pool",
        Spec::MaxPool { pool: 3, stride: 2 },
        named("pool1_pad"),
    );
    let mut previous = "pool1_pool".to_string();
    for (s, ((&count, &width), &stack_stride)) in config
        .blocks
        .iter()
        .zip(&config.filters)
        .zip(&config.strides)
        .enumerate()
    {
        let out_width = config.expansion * width;
        for b in 1..=count {
            let p = format!("conv{}_block{b}", s + 2);
            let n = |layer: &str| format!("{p}_{layer}");
            let stride = if b == count { stack_stride } else { 1 };
            push(&n("preact_bn"), Spec::BatchNorm, named(&previous));
            push(&n("preact_relu"), Spec::Relu, named(&n("preact_bn")));
            let shortcut = if b == 1 {
                push(
                    &n("0_conv"),
                    conv(out_width, 1, 1, true),
                    named(&n("preact_relu")),
                );
                Source::Named(n("0_conv"))
            } else if stride > 1 {
                Source::ShortcutPool {
                    of: previous.clone(),
                    stride: stride as u64,
                }
            } else {
                Source::Named(previous.clone())
            };
            push(
                &n("1_conv"),
                conv(width, 1, 1, false),
                named(&n("preact_relu")),
            );
            push(&n("1_bn"), Spec::BatchNorm, named(&n("1_conv")));
            push(&n("1_relu"), Spec::Relu, named(&n("1_bn")));
            push(&n("2_pad"), Spec::Pad(1), named(&n("1_relu")));
            push(
                &n("2_conv"),
                conv(width, 3, stride, false),
                named(&n("2_pad")),
            );
            push(&n("2_bn"), Spec::BatchNorm, named(&n("2_conv")));
            push(&n("2_relu"), Spec::Relu, named(&n("2_bn")));
            push(
                &n("3_conv"),
                conv(out_width, 1, 1, true),
                named(&n("2_relu")),
            );
            push(
                &n("out"),
                Spec::Add,
                vec![shortcut, Source::Named(n("3_conv"))],
            );
            previous = n("out");
        }
    }
    push("post_bn", Spec::BatchNorm, named(&previous));
    push(LAST_LAYER, Spec::Relu, named("post_bn"));
    out
}

fn check_layer(layer: &Layer, spec: &Spec, epsilon: f64) -> Result<(), String> {
    if layer.class != spec.class() {
        return Err(format!(
            "unexpected layer {}: Keras's ResNetV2 has a {} there",
            layer.describe(),
            spec.class()
        ));
    }
    let wrong = |what: &str, found: String, expected: String| {
        Err(format!(
            "layer {} has {what} {found}, Keras's ResNetV2 has {expected}",
            layer.describe()
        ))
    };
    if layer
        .text("data_format")
        .is_some_and(|f| f != "channels_last")
    {
        return wrong(
            "data_format",
            format!("{:?}", layer.text("data_format")),
            "channels_last".into(),
        );
    }
    match *spec {
        Spec::Pad(p) => {
            let found = layer.get("padding").and_then(padding);
            if found != Some(((p, p), (p, p))) {
                return wrong(
                    "padding",
                    format!("{found:?}"),
                    format!("(({p}, {p}), ({p}, {p}))"),
                );
            }
        }
        Spec::Conv {
            filters,
            kernel,
            stride,
            bias,
        } => {
            let checks = [
                (
                    "filters",
                    layer.number("filters").map(|f| (f, f)),
                    (filters, filters),
                ),
                ("kernel_size", layer.pair("kernel_size"), (kernel, kernel)),
                ("strides", layer.pair("strides"), (stride, stride)),
                (
                    "dilation_rate",
                    layer.pair("dilation_rate").or(Some((1, 1))),
                    (1, 1),
                ),
                (
                    "groups",
                    layer.number("groups").or(Some(1)).map(|g| (g, g)),
                    (1, 1),
                ),
            ];
            for (what, found, expected) in checks {
                if found != Some(expected) {
                    return wrong(what, format!("{found:?}"), format!("{expected:?}"));
                }
            }
            if layer.text("padding") != Some("valid") {
                return wrong(
                    "padding",
                    format!("{:?}", layer.text("padding")),
                    "valid".into(),
                );
            }
            if layer.get("use_bias").and_then(Value::as_bool) != Some(bias) {
                return wrong(
                    "use_bias",
                    format!("{:?}", layer.get("use_bias")),
                    bias.to_string(),
                );
            }
            if !matches!(layer.text("activation"), Some("linear") | None) {
                return wrong(
                    "activation",
                    format!("{:?}", layer.text("activation")),
                    "linear".into(),
                );
            }
        }
        Spec::BatchNorm => {
            let found = layer.get("epsilon").and_then(Value::as_f64);
            if found.is_none_or(|e| (e - epsilon).abs() > 1e-12 * epsilon.abs().max(1.0)) {
                return wrong(
                    "epsilon",
                    format!("{found:?}"),
                    format!("{epsilon} (as post_bn)"),
                );
            }
            for flag in ["center", "scale"] {
                if layer.get(flag).and_then(Value::as_bool) == Some(false) {
                    return wrong(flag, "false".into(), "true".into());
                }
            }
            let axis = layer.get("axis").map(|a| match a {
                Value::Array(items) => match items.as_slice() {
                    [only] => only.as_i64(),
                    _ => None,
                },
                other => other.as_i64(),
            });
            if !matches!(axis, None | Some(Some(3 | -1))) {
                return wrong(
                    "axis",
                    format!("{:?}", layer.get("axis")),
                    "3 (channels)".into(),
                );
            }
        }
        Spec::Relu => {
            if layer.text("activation") != Some("relu") {
                return wrong(
                    "activation",
                    format!("{:?}", layer.text("activation")),
                    "relu".into(),
                );
            }
        }
        Spec::MaxPool { pool, stride } => check_pool(layer, pool, stride)?,
        Spec::Add => {}
    }
    Ok(())
}

fn check_pool(layer: &Layer, pool: u64, stride: u64) -> Result<(), String> {
    let found = (
        layer.pair("pool_size"),
        layer.pair("strides"),
        layer.text("padding"),
    );
    if found != (Some((pool, pool)), Some((stride, stride)), Some("valid")) {
        return Err(format!(
            "layer {} has pool_size/strides/padding {found:?}, Keras's ResNetV2 has \
             ({pool}, {stride}, valid)",
            layer.describe()
        ));
    }
    Ok(())
}

/// `((top, bottom), (left, right))` from `[[t, b], [l, r]]`, `[h, w]` or `p`.
fn padding(value: &Value) -> Option<((u64, u64), (u64, u64))> {
    if let Value::Array(items) = value
        && let [rows @ Value::Array(_), columns @ Value::Array(_)] = items.as_slice()
    {
        return Some((pair(rows)?, pair(columns)?));
    }
    let (h, w) = pair(value)?;
    Some(((h, h), (w, w)))
}

fn check_inputs(
    graph: &Graph,
    layer: &Layer,
    expected: &[Source],
    used: &mut HashSet<String>,
) -> Result<(), String> {
    let describe = |sources: &[Source]| -> String {
        sources
            .iter()
            .map(|s| match s {
                Source::Named(n) => format!("`{n}`"),
                Source::ShortcutPool { of, stride } => {
                    format!("MaxPooling2D(1, {stride}) of `{of}`")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mismatch = || {
        format!(
            "layer {} reads {:?}, Keras's ResNetV2 feeds it {}",
            layer.describe(),
            layer.inputs,
            describe(expected)
        )
    };
    if layer.inputs.len() != expected.len() {
        return Err(mismatch());
    }
    for (found, source) in layer.inputs.iter().zip(expected) {
        match source {
            Source::Named(name) if name == found => {}
            Source::ShortcutPool { of, stride } => {
                let pool = graph
                    .layer(found)
                    .filter(|p| p.class == "MaxPooling2D" && p.inputs == [of.clone()])
                    .ok_or_else(mismatch)?;
                check_pool(pool, 1, *stride)?;
                used.insert(pool.name.clone());
            }
            Source::Named(_) => return Err(mismatch()),
        }
    }
    Ok(())
}
