//! Calibrating a [`FractureClassifier`]: its temperature, fitted on a dataset part by
//! [`crate::metrics::fit_temperature`], saved in the bundle and applied to every probability.

use super::FractureClassifier;
use crate::dataset::Part;
use crate::error::Result;
use crate::metrics::{
    check_temperature, fit_temperature, rescale_threshold, Metric, TemperatureFit,
};

impl FractureClassifier {
    /// The temperature `T` of the fracture probabilities, `sigmoid(logit / T)`: 1 for an
    /// uncalibrated classifier, fitted on the validation part by
    /// [`FractureClassifier::train`].
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// Set the temperature (finite and positive). The threshold is carried over to the new
    /// scale ([`rescale_threshold`]), so the classifier makes the same decisions with
    /// differently calibrated probabilities.
    ///
    /// ```
    /// use fracture::device::DeviceRequest;
    /// use fracture::model::ResNetV2Config;
    /// let mut clf = fracture::FractureClassifier::builder()
    ///     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(fracture::WeightsSource::Random { seed: 0 })
    ///     .device(DeviceRequest::Cpu)
    ///     .image_size(32, 32)
    ///     .threshold(0.7)
    ///     .build()?;
    /// clf.set_temperature(2.0)?;
    /// assert_eq!(clf.temperature(), 2.0);
    /// assert!(clf.threshold() < 0.7); // the same logit cut-off, softer probabilities
    /// assert!(clf.set_temperature(0.0).is_err());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn set_temperature(&mut self, temperature: f64) -> Result<()> {
        check_temperature(temperature)?;
        self.threshold = rescale_threshold(self.threshold, self.temperature, temperature);
        self.temperature = temperature;
        Ok(())
    }

    /// Fit the temperature on `part` (normally the validation part, never the test part)
    /// and apply it as [`FractureClassifier::set_temperature`] does; returns the fit, or
    /// `Undefined` (temperature unchanged) when the part holds a single class.
    pub fn calibrate(&mut self, part: &Part) -> Result<Metric<TemperatureFit>> {
        let scored = self.score_part(part)?;
        self.calibrate_from(&scored.labels, &scored.logits)
    }

    /// [`Self::calibrate`] on scored cases.
    pub(super) fn calibrate_from(
        &mut self,
        labels: &[bool],
        logits: &[f64],
    ) -> Result<Metric<TemperatureFit>> {
        let fit = fit_temperature(labels, logits)?;
        if let Metric::Defined(fit) = fit {
            self.set_temperature(fit.temperature)?;
        }
        Ok(fit)
    }
}
