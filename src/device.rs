//! Compute device selection: CPU, CUDA or Metal.
//!
//! The `cuda` and `metal` cargo features pass through to candle. Asking for a device whose
//! feature is not compiled in, or which is not present on the machine, is an
//! [`Error::Device`] that says which of the two it is.

use crate::error::{Error, Result};
pub use candle_core::Device;

/// Which device a user asks for.
///
/// ```
/// use fracture::device::{DeviceRequest, select};
/// let cpu = select(DeviceRequest::Cpu).unwrap();
/// assert!(cpu.is_cpu());
/// let best = select(DeviceRequest::BestAvailable).unwrap();
/// # let _ = best;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// The CPU (always available).
    Cpu,
    /// The CUDA GPU with this ordinal (needs the `cuda` feature).
    Cuda(usize),
    /// The Metal GPU with this ordinal (needs the `metal` feature).
    Metal(usize),
    /// CUDA if compiled in and present, else Metal, else the CPU.
    #[default]
    BestAvailable,
}

impl std::str::FromStr for DeviceRequest {
    type Err = Error;

    /// Parse `cpu`, `cuda`, `cuda:1`, `metal`, `metal:0` or `best`/`auto`.
    ///
    /// ```
    /// use fracture::device::DeviceRequest;
    /// assert_eq!("cuda:1".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda(1));
    /// assert!("tpu".parse::<DeviceRequest>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let (kind, ordinal) = match lower.split_once(':') {
            Some((k, o)) => {
                let n = o.parse::<usize>().map_err(|_| {
                    Error::Device(format!(
                        "bad device ordinal {o:?} in {s:?} (expected a number)"
                    ))
                })?;
                (k.to_string(), n)
            }
            None => (lower.clone(), 0),
        };
        match kind.as_str() {
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" | "gpu" => Ok(DeviceRequest::Cuda(ordinal)),
            "metal" | "mps" => Ok(DeviceRequest::Metal(ordinal)),
            "best" | "auto" => Ok(DeviceRequest::BestAvailable),
            _ => Err(Error::Device(format!(
                "unknown device {s:?}: use cpu, cuda[:N], metal[:N] or best"
            ))),
        }
    }
}

/// Turn a [`DeviceRequest`] into a candle [`Device`].
///
/// ```
/// use fracture::device::{select, DeviceRequest};
/// # #[cfg(not(feature = "cuda"))]
/// assert!(select(DeviceRequest::Cuda(0)).unwrap_err().to_string().contains("cuda"));
/// ```
pub fn select(request: DeviceRequest) -> Result<Device> {
    match request {
        DeviceRequest::Cpu => Ok(Device::Cpu),
        DeviceRequest::Cuda(ordinal) => cuda(ordinal),
        DeviceRequest::Metal(ordinal) => metal(ordinal),
        DeviceRequest::BestAvailable => Ok(best_available()),
    }
}

/// The best device present: CUDA GPU 0, else Metal GPU 0, else the CPU.
///
/// ```
/// let device = fracture::device::best_available();
/// # let _ = device;
/// ```
pub fn best_available() -> Device {
    if let Ok(device) = cuda(0) {
        return device;
    }
    if let Ok(device) = metal(0) {
        return device;
    }
    Device::Cpu
}

fn cuda(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Err(Error::Device(
            "cuda requested but this build has no CUDA support: rebuild with `--features cuda`"
                .into(),
        ));
    }
    Device::new_cuda(ordinal)
        .map_err(|e| Error::Device(format!("cuda:{ordinal} requested but not usable: {e}")))
}

fn metal(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "metal") {
        return Err(Error::Device(
            "metal requested but this build has no Metal support: rebuild with `--features metal`"
                .into(),
        ));
    }
    Device::new_metal(ordinal)
        .map_err(|e| Error::Device(format!("metal:{ordinal} requested but not usable: {e}")))
}

/// A short human-readable name for a device (`cpu`, `cuda:0`, `metal:0`).
///
/// ```
/// assert_eq!(fracture::device::name(&candle_core::Device::Cpu), "cpu");
/// ```
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
