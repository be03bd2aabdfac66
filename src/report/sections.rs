//! The page's sections, one function each: headline, curves, confusion matrix, threshold
//! sweep, calibration, test-time augmentation, subgroups, training, data and split,
//! provenance and gallery (the model card is in [`super::model_card`]).

use super::charts::RenderedChart;
use super::data::ReportData;
use super::encode_png;
use super::gallery::{overlay_thumbnail, thumbnail, GalleryImage, GalleryKind};
use super::text::{base64, card, chart_image, escape, pointer_step, Format, Numbers};
use crate::classifier::DEFAULT_THRESHOLD;
use crate::error::Result;
use std::fmt::Write;

pub(super) fn headline(data: &ReportData<'_>, n: &Numbers<'_>) -> Result<String> {
    let threshold = n.show("/evaluation/at_threshold/threshold", Format::Decimal3)?;
    let cards = [
        card(
            "Sensitivity (fractures found)",
            n.interval("/evaluation/intervals/sensitivity", Format::Percent1)?,
            &format!(
                "at threshold {threshold}; {} of {} fractures",
                n.show(
                    "/evaluation/at_threshold/confusion/true_positives",
                    Format::Count
                )?,
                n.show("/summary/fractured", Format::Count)?
            ),
        ),
        card(
            "Specificity (normals cleared)",
            n.interval("/evaluation/intervals/specificity", Format::Percent1)?,
            &format!(
                "at threshold {threshold}; {} of {} not fractured",
                n.show(
                    "/evaluation/at_threshold/confusion/true_negatives",
                    Format::Count
                )?,
                n.show("/summary/not_fractured", Format::Count)?
            ),
        ),
        card(
            "ROC AUC",
            n.interval("/evaluation/intervals/auc", Format::Decimal3)?,
            &format!(
                "bootstrap, {} resamples",
                n.show("/evaluation/bootstrap/n_resamples", Format::Count)?
            ),
        ),
        card(
            "Prevalence (fraction fractured)",
            n.show("/summary/prevalence", Format::Percent1)?,
            &format!(
                "{} images evaluated",
                n.show("/summary/cases", Format::Count)?
            ),
        ),
        card(
            "Accuracy",
            n.show("/evaluation/at_threshold/accuracy", Format::Percent1)?,
            &format!(
                "always answering \"not fractured\" scores {}",
                n.show(
                    "/evaluation/at_threshold/majority_baseline_accuracy",
                    Format::Percent1
                )?
            ),
        ),
        card(
            "Average precision",
            n.show_or_undefined(
                "/evaluation/at_threshold/average_precision",
                Format::Decimal3,
            )?,
            &format!(
                "a random ranking scores the prevalence, {}",
                n.show("/summary/prevalence", Format::Decimal3)?
            ),
        ),
    ];
    let mut out = format!("<div class=\"cards\">{}</div>", cards.join(""));
    let _ = write!(
        out,
        "<p>{} {} \
         At the reference notebook's {DEFAULT_THRESHOLD}: sensitivity {}, specificity {}.</p>\
         <p id=\"split-origin\">{}</p>",
        escape(&data.model.threshold_sentence()),
        super::calibration_text::sentence(data.evaluation, n)?,
        n.show_or_undefined("/evaluation/at_half/sensitivity", Format::Percent1)?,
        n.show_or_undefined("/evaluation/at_half/specificity", Format::Percent1)?,
        escape(&super::data::split_origin_sentence(
            &data.evaluation.part,
            data.evaluation.split_origin
        ))
    );
    if data.summary.skipped > 0 {
        let _ = write!(
            out,
            "<p class=\"warn\">{} unreadable image(s) were left out (listed under Data and split).</p>",
            n.show("/summary/skipped", Format::Count)?
        );
    }
    Ok(out)
}

/// The sensitivity at each reported specificity, threshold-free.
pub(super) fn operating_points(data: &ReportData<'_>, n: &Numbers<'_>) -> Result<String> {
    let mut rows = String::new();
    for (index, point) in data
        .evaluation
        .sensitivity_at_specificity
        .iter()
        .enumerate()
    {
        let _ = write!(
            rows,
            "<tr><td class=\"name\">{:.2}</td><td>{}</td></tr>",
            point.specificity,
            n.interval(
                &format!("/evaluation/sensitivity_at_specificity/{index}/sensitivity"),
                Format::Percent1
            )?
        );
    }
    Ok(format!(
        "<p>What the model could do at other operating points, whatever its threshold: at each \
         specificity, the highest sensitivity among the thresholds whose specificity on these \
         images reaches it (no interpolation between thresholds). Intervals: {} % bootstrap \
         over the evaluated images. Chosen here, on the evaluated images, these points are \
         optimistic: a threshold meant for use comes from validation data, not from these images.</p>\
         <table id=\"specificity-table\"><tr><th class=\"name\">specificity at least</th>\
         <th>sensitivity</th></tr>{rows}</table>",
        n.show_confidence("/evaluation/bootstrap/confidence")?
    ))
}

pub(super) fn confusion(n: &Numbers<'_>) -> Result<String> {
    let c = |name: &str| {
        n.show(
            &format!("/evaluation/at_threshold/confusion/{name}"),
            Format::Count,
        )
    };
    Ok(format!(
        "<table id=\"confusion-table\"><tr><th class=\"name\">true \\ predicted</th><th>fractured</th><th>not fractured</th></tr>\
         <tr><td class=\"name\">fractured</td><td>{}</td><td>{}</td></tr>\
         <tr><td class=\"name\">not fractured</td><td>{}</td><td>{}</td></tr></table>\
         <p>Positive predictive value {}, negative predictive value {} at threshold {}.</p>",
        c("true_positives")?,
        c("false_negatives")?,
        c("false_positives")?,
        c("true_negatives")?,
        n.show_or_undefined("/summary/ppv", Format::Percent1)?,
        n.show_or_undefined("/summary/npv", Format::Percent1)?,
        n.show("/evaluation/at_threshold/threshold", Format::Decimal3)?,
    ))
}

pub(super) fn threshold_sweep(
    data: &ReportData<'_>,
    n: &Numbers<'_>,
    charts: &[RenderedChart],
) -> Result<String> {
    let mut rows = String::new();
    for (index, point) in data.threshold_sweep.iter().enumerate() {
        if index % 10 != 0 || index == 0 || index == super::data::SWEEP_STEPS {
            continue;
        }
        let cell = |what: &str| {
            n.show_or_undefined(
                &format!("/threshold_sweep/{index}/{what}"),
                Format::Percent1,
            )
        };
        let _ = write!(
            rows,
            "<tr><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            point.threshold,
            cell("sensitivity")?,
            cell("specificity")?,
            cell("ppv")?,
            cell("npv")?
        );
    }
    Ok(format!(
        "<div class=\"charts\">{}</div><table id=\"sweep-table\"><tr><th>threshold</th><th>sensitivity</th><th>specificity</th><th>PPV</th><th>NPV</th></tr>{rows}</table>",
        chart_image(charts, "threshold_sweep")
    ))
}

pub(super) fn calibration(
    data: &ReportData<'_>,
    n: &Numbers<'_>,
    charts: &[RenderedChart],
) -> Result<String> {
    let row = |when: &str| -> Result<String> {
        let c = |what: &str| format!("/evaluation/calibration/{when}/{what}");
        Ok(format!(
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            super::calibration_text::with_interval(n, when, "ece")?,
            super::calibration_text::with_interval(n, when, "brier")?,
            n.show_or_undefined(&c("slope"), Format::Decimal3)?,
            n.show_or_undefined(&c("intercept"), Format::Decimal3)?
        ))
    };
    Ok(format!(
        "<div class=\"charts\">{}</div>\
         <table id=\"calibration-table\"><tr><th class=\"name\"></th><th>ECE (15 bins)</th><th>Brier score</th>\
         <th>calibration slope</th><th>calibration intercept</th></tr>\
         <tr><td class=\"name\">before: sigmoid(logit)</td>{}</tr>\
         <tr><td class=\"name\">after: {}</td>{}</tr></table>\
         <p>{}</p>\
         <p>Intervals: {} % bootstrap over the evaluated images. Calibration slope 1 and intercept 0 \
         are ideal (slope below 1: too confident; intercept below 0: probabilities too high on average). \
         Calibration changes the probabilities, not their order, so the ROC AUC and the decisions at the \
         threshold stay the same; it holds for data like the part it was fitted on, not for another \
         prevalence or scanner.</p>",
        chart_image(charts, "reliability"),
        row("before")?,
        escape(&data.evaluation.calibration.map.describe()),
        row("after")?,
        super::calibration_text::sentence(data.evaluation, n)?,
        n.show_confidence("/evaluation/bootstrap/confidence")?,
    ))
}

pub(super) fn tta(data: &ReportData<'_>, n: &Numbers<'_>) -> Result<String> {
    let Some(tta) = &data.evaluation.tta else {
        return Ok("<p id=\"tta-off\">Off: every image was scored once, as it is.</p>".into());
    };
    Ok(format!(
        "<p>Views: {} (the logits are averaged). ROC AUC without {}, with {}; paired-bootstrap difference \
         (with − without) {}.</p>",
        escape(&tta.config.describe()),
        n.show_or_undefined("/evaluation/tta/auc_without", Format::Decimal4)?,
        n.show_or_undefined("/evaluation/tta/auc_with", Format::Decimal4)?,
        n.interval("/evaluation/tta/difference", Format::Decimal4)?
    ))
}

fn subgroup_table(
    id: &str,
    groups: Option<&crate::metrics::SubgroupMetrics>,
    pointer: &str,
    n: &Numbers<'_>,
) -> Result<String> {
    let Some(groups) = groups else {
        return Ok(format!(
            "<p id=\"{id}-missing\">Not available: the images carry no metadata.</p>"
        ));
    };
    let mut rows = String::new();
    for (name, _) in groups.iter() {
        let base = format!("{pointer}/groups/{}", pointer_step(name));
        let v = |what: &str, format| n.show(&format!("{base}/{what}"), format);
        let metric = |what: &str, format| n.show_or_undefined(&format!("{base}/{what}"), format);
        let _ = write!(
            rows,
            "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            v("report/fractured/support", Format::Count)?,
            v("report/not_fractured/support", Format::Count)?,
            metric("sensitivity", Format::Percent1)?,
            metric("specificity", Format::Percent1)?,
            metric("roc_auc", Format::Decimal3)?,
            v("accuracy", Format::Percent1)?
        );
    }
    Ok(format!(
        "<table id=\"{id}\"><tr><th class=\"name\">group</th><th>fractured</th><th>not fractured</th><th>sensitivity</th>\
         <th>specificity</th><th>ROC AUC</th><th>accuracy</th></tr>{rows}</table>"
    ))
}

pub(super) fn subgroups(data: &ReportData<'_>, n: &Numbers<'_>) -> Result<String> {
    Ok(format!(
        "<p>At the classifier's threshold. Small groups have wide uncertainty; n/a: the group lacks one class.</p>\
         <h3>By body part</h3>{}<h3>By visible surgical hardware</h3>{}",
        subgroup_table("body-part-table", data.evaluation.by_body_part.as_ref(), "/evaluation/by_body_part", n)?,
        subgroup_table("hardware-table", data.evaluation.by_hardware.as_ref(), "/evaluation/by_hardware", n)?
    ))
}

pub(super) fn training(
    data: &ReportData<'_>,
    n: &Numbers<'_>,
    charts: &[RenderedChart],
) -> Result<String> {
    let Some(history) = data.history.filter(|h| !h.epochs.is_empty()) else {
        return Ok("<p id=\"training-missing\">No training history in this bundle.</p>".into());
    };
    let best = history
        .best_epoch()
        .and_then(|b| history.epochs.iter().position(|e| e.epoch == b.epoch));
    let best_text = match best {
        Some(index) => format!(
            "Best epoch {} of {} by validation loss ({}; validation AUC {}); its weights are the model's.",
            n.show(&format!("/history/epochs/{index}/epoch"), Format::Count)?,
            history.epochs.len(),
            n.show(&format!("/history/epochs/{index}/val_loss"), Format::Decimal4)?,
            n.show_or_undefined(&format!("/history/epochs/{index}/val_auc"), Format::Decimal3)?
        ),
        None => String::new(),
    };
    Ok(format!(
        "<div class=\"charts\">{}</div><p>{best_text}</p>",
        chart_image(charts, "training")
    ))
}

pub(super) fn split(data: &ReportData<'_>, n: &Numbers<'_>) -> Result<String> {
    let mut out = String::new();
    match &data.split {
        Some(parts) => {
            let mut rows = String::new();
            for (index, part) in parts.iter().enumerate() {
                let v = |what: &str| n.show(&format!("/split/{index}/{what}"), Format::Count);
                let _ = write!(
                    rows,
                    "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&part.part),
                    v("images")?,
                    v("fractured")?,
                    v("not_fractured")?
                );
            }
            let _ = write!(
                out,
                "<p>Stratified by label; byte-identical images are kept in one part.</p><table id=\"split-table\">\
                 <tr><th class=\"name\">part</th><th>images</th><th>fractured</th><th>not fractured</th></tr>{rows}</table>"
            );
        }
        None => {
            out.push_str("<p id=\"split-missing\">The split is not recorded in this bundle.</p>")
        }
    }
    let _ = write!(
        out,
        "<p>Data source: {}</p>",
        escape(&data.data_source.name)
    );
    if !data.data_source.excluded.is_empty() {
        out.push_str(
            "<h3>Left out or noticed when the data set was opened</h3><ul id=\"excluded\">",
        );
        for (index, (what, _)) in data.data_source.excluded.iter().enumerate() {
            let _ = write!(
                out,
                "<li>{}: {}</li>",
                escape(what),
                n.show(&format!("/data_source/excluded/{index}/1"), Format::Count)?
            );
        }
        out.push_str("</ul>");
    }
    let skipped = &data.evaluation.skipped;
    let _ = write!(
        out,
        "<h3>Unreadable images of the evaluated part</h3><p>{}</p>",
        n.show("/summary/skipped", Format::Count)?
    );
    if !skipped.is_empty() {
        out.push_str("<ul id=\"skipped\">");
        // Paths and reasons as metrics.json stores them (relative or hashed, never absolute).
        for index in 0..skipped.len() {
            let _ = write!(
                out,
                "<li>{}: {}</li>",
                escape(&n.text(&format!("/evaluation/skipped/{index}/0"))?),
                escape(&n.text(&format!("/evaluation/skipped/{index}/1"))?)
            );
        }
        out.push_str("</ul>");
    }
    Ok(out)
}

pub(super) fn provenance(data: &ReportData<'_>) -> Result<String> {
    let m = &data.model;
    let unknown = || "not recorded".to_string();
    let training = m.training.as_ref().map_or_else(unknown, |t| {
        // Under a stage cache the cached views take the place of the loader's augmentation.
        let augmentation = match &t.stage_cache {
            Some(cache) => format!(
                "frozen stages cached, views {}",
                cache
                    .views
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!("augmentation {}", if t.augment { "on" } else { "off" }),
        };
        let boxes = t.box_supervision.as_ref().map_or(String::new(), |b| {
            format!(
                ", box supervision (weight {}, positive cells x{}, boxes grown {})",
                b.weight, b.positive_weight, b.grow
            )
        });
        format!(
            "{} epochs, batch {}, learning rate {}, backbone {:?}, {augmentation}, class weights {}{boxes}",
            t.epochs,
            t.batch_size,
            t.learning_rate,
            t.backbone,
            if t.class_weights.is_some() { "on" } else { "off" }
        )
    });
    let rows = [
        ("fracture version", m.crate_version.clone()),
        ("backbone", m.backbone.clone()),
        ("backbone parameters", m.backbone_parameters.to_string()),
        (
            "head",
            format!(
                "dense {} + ReLU, dropout {}, one logit",
                m.head.hidden, m.head.dropout
            ),
        ),
        (
            "input",
            format!(
                "{}x{}, {} resize, {} scaling",
                m.preprocess.width,
                m.preprocess.height,
                m.preprocess.filter,
                m.preprocess.normalization
            ),
        ),
        (
            "initial weights",
            m.initial_weights.clone().unwrap_or_else(unknown),
        ),
        ("training", training),
        ("threshold", format!("{:.4}", m.threshold)),
        ("calibration", m.calibration.describe()),
        (
            "threshold source",
            m.threshold_source.map_or_else(unknown, |s| s.to_string()),
        ),
        ("test-time augmentation", m.tta.describe()),
        ("bundle", m.bundle.clone().unwrap_or_else(unknown)),
        (
            "weights SHA-256",
            m.weights_sha256.clone().unwrap_or_else(unknown),
        ),
    ];
    let mut out = String::from("<dl id=\"provenance-list\">");
    for (what, value) in rows {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(what), escape(&value));
    }
    out.push_str("</dl>");
    Ok(out)
}

fn data_uri(image: &image::DynamicImage) -> Result<String> {
    Ok(format!(
        "data:image/png;base64,{}",
        base64(&encode_png(image)?)
    ))
}

pub(super) fn gallery_section(gallery: &[GalleryImage], n: &Numbers<'_>) -> Result<String> {
    let mut out = String::from(
        "<p>The most confident misses and false alarms, and the clearest hits, at the classifier's threshold. \
         Red boxes: annotated fractures; right: the explanation overlay, where one was given.</p>",
    );
    for kind in GalleryKind::ALL {
        let _ = write!(out, "<h3>{}s</h3>", escape(kind.name()));
        let members: Vec<(usize, &GalleryImage)> = gallery
            .iter()
            .enumerate()
            .filter(|(_, g)| g.kind == kind)
            .collect();
        if members.is_empty() {
            out.push_str("<p>None.</p>");
            continue;
        }
        out.push_str("<div class=\"gallery\">");
        for (index, image) in members {
            // The path as metrics.json stores it (relative or hashed, never absolute).
            let name = n.text(&format!("/gallery/{index}/file"))?;
            let picture = match thumbnail(image) {
                Ok(thumb) => format!(
                    "<img src=\"{}\" alt=\"{}\">",
                    data_uri(&thumb)?,
                    escape(&name)
                ),
                Err(e) => format!(
                    "<p class=\"warn\">cannot show the image: {}</p>",
                    escape(
                        &e.to_string()
                            .replace(&image.path.display().to_string(), &name)
                    )
                ),
            };
            let overlay = match &image.overlay {
                Some(overlay) => match overlay_thumbnail(overlay) {
                    Ok(thumb) => format!(
                        "<img src=\"{}\" alt=\"overlay of {}\">",
                        data_uri(&thumb)?,
                        escape(&name)
                    ),
                    Err(e) => format!(
                        "<p class=\"warn\">cannot show the overlay: {}</p>",
                        escape(&e.to_string())
                    ),
                },
                None => String::new(),
            };
            let _ = write!(
                out,
                "<figure><div class=\"pair\">{picture}{overlay}</div><figcaption>{}<br>{}, probability {}</figcaption></figure>",
                escape(&name),
                if image.fractured { "fractured" } else { "not fractured" },
                n.show(&format!("/gallery/{index}/probability"), Format::Decimal3)?
            );
        }
        out.push_str("</div>");
    }
    Ok(out)
}
