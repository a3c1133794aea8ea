//! Devices: which one a run trains on. `device "auto"|"cpu"|"cuda"|"cuda:N"` (or `--device`)
//! resolves against what this binary was built with and what the machine has: `auto` takes the
//! first CUDA device when the binary has CUDA and the driver reports one, else the CPU;
//! `cuda` and `cuda:N` need both, and say precisely what is missing when they are not there.
//! The driver is asked once per process.

use std::fmt;

use crate::spec::{self, RunSpec};

/// Why a requested device cannot be used: what is missing, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub what: String,
    pub help: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.what, self.help)
    }
}

impl std::error::Error for Unavailable {}

/// A device as a run will use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `None`: the CPU; `Some(i)`: CUDA device i.
    pub cuda: Option<usize>,
    /// Why `auto` did not take a GPU, when the binary could have used one.
    pub note: Option<String>,
}

impl Resolved {
    /// The device's name as run directories record it: `cpu`, `cuda:0`, ….
    pub fn name(&self) -> String {
        match self.cuda {
            None => "cpu".to_owned(),
            Some(i) => format!("cuda:{i}"),
        }
    }
}

/// Parses a device as `--device` and the `device` node write it.
pub fn parse(text: &str) -> Result<spec::Device, Unavailable> {
    spec::Device::parse(text).ok_or_else(|| Unavailable {
        what: format!("`{text}` is not a device"),
        help: "a device is auto, cpu, cuda or cuda:N (N counting from 0)".to_owned(),
    })
}

/// The device a run asks for: `--device` when given, else the experiment's.
pub fn requested(spec: &RunSpec, flag: Option<&str>) -> Result<spec::Device, Unavailable> {
    match flag {
        Some(text) => parse(text),
        None => Ok(spec.device),
    }
}

/// How a request is written: `auto`, `cpu`, `cuda`, `cuda:N`.
pub fn display(device: spec::Device) -> String {
    match device {
        spec::Device::Auto => "auto".to_owned(),
        spec::Device::Cpu => "cpu".to_owned(),
        spec::Device::Cuda(None) => "cuda".to_owned(),
        spec::Device::Cuda(Some(i)) => format!("cuda:{i}"),
    }
}

/// Resolves a run's device on this machine, without opening it.
pub fn resolve(spec: &RunSpec, flag: Option<&str>) -> Result<Resolved, Unavailable> {
    resolve_with(requested(spec, flag)?, cuda_devices())
}

/// Resolves a request given what CUDA offers: `Err` when this binary has no CUDA, else the
/// driver's device count or why the driver cannot be used.
fn resolve_with(
    device: spec::Device,
    cuda: Result<Result<usize, Unavailable>, ()>,
) -> Result<Resolved, Unavailable> {
    let cpu = |note| Resolved { cuda: None, note };
    match (device, cuda) {
        (spec::Device::Cpu, _) | (spec::Device::Auto, Err(())) => Ok(cpu(None)),
        (spec::Device::Auto, Ok(Ok(n))) if n > 0 => Ok(Resolved {
            cuda: Some(0),
            note: None,
        }),
        (spec::Device::Auto, Ok(Ok(_))) => Ok(cpu(Some(
            "device auto: no CUDA device found, training on the CPU".to_owned(),
        ))),
        (spec::Device::Auto, Ok(Err(why))) => Ok(cpu(Some(format!(
            "device auto: {}, training on the CPU",
            why.what
        )))),
        (spec::Device::Cuda(_), Err(())) => Err(Unavailable {
            what: format!("device `{}` needs a CUDA build of xp", display(device)),
            help: "this xp was built without CUDA; build with `--features cuda`, or use `--device cpu`"
                .to_owned(),
        }),
        (spec::Device::Cuda(_), Ok(Err(why))) => Err(Unavailable {
            what: format!("device `{}` cannot be used: {}", display(device), why.what),
            help: why.help,
        }),
        (spec::Device::Cuda(index), Ok(Ok(n))) => {
            let i = index.unwrap_or(0);
            if i < n {
                return Ok(Resolved {
                    cuda: Some(i),
                    note: None,
                });
            }
            let what = match n {
                0 => format!("device `{}`: no CUDA device found", display(device)),
                1 => format!(
                    "device `{}` does not exist: this machine has one CUDA device, cuda:0",
                    display(device)
                ),
                _ => format!(
                    "device `{}` does not exist: this machine has {n} CUDA devices, cuda:0 to cuda:{}",
                    display(device),
                    n - 1
                ),
            };
            Err(Unavailable {
                what,
                help: "check `nvidia-smi` and CUDA_VISIBLE_DEVICES, or use `--device cpu`"
                    .to_owned(),
            })
        }
    }
}

/// Opens the device a run trains on: `(device, name like "cuda:0", note)`. The note says
/// why `auto` fell back to the CPU in a binary that has CUDA.
pub fn open_device(
    spec: &RunSpec,
    flag: Option<&str>,
) -> Result<(candle_core::Device, String, Option<String>), String> {
    let resolved = resolve(spec, flag).map_err(|e| e.to_string())?;
    let name = resolved.name();
    let device = match resolved.cuda {
        None => candle_core::Device::Cpu,
        Some(i) => candle_core::Device::new_cuda(i)
            .map_err(|e| format!("opening CUDA device {name} failed: {e}"))?,
    };
    Ok((device, name, resolved.note))
}

/// `Err(())` without CUDA in this binary; else the number of CUDA devices the driver reports,
/// or why the driver cannot be used. The driver is initialised once, on first use.
#[cfg(not(feature = "cuda"))]
fn cuda_devices() -> Result<Result<usize, Unavailable>, ()> {
    Err(())
}

#[cfg(feature = "cuda")]
fn cuda_devices() -> Result<Result<usize, Unavailable>, ()> {
    static COUNT: std::sync::OnceLock<Result<usize, Unavailable>> = std::sync::OnceLock::new();
    Ok(COUNT.get_or_init(probe).clone())
}

#[cfg(feature = "cuda")]
fn probe() -> Result<usize, Unavailable> {
    use candle_core::cuda_backend::cudarc::driver::{CudaContext, sys::CUresult};
    match CudaContext::device_count() {
        Ok(n) => Ok(usize::try_from(n).unwrap_or(0)),
        Err(e) => Err(match e.0 {
            CUresult::CUDA_ERROR_NO_DEVICE => Unavailable {
                what: "no CUDA device found".to_owned(),
                help: "the NVIDIA driver reports no GPU; check `nvidia-smi` and CUDA_VISIBLE_DEVICES, or use `--device cpu`"
                    .to_owned(),
            },
            CUresult::CUDA_ERROR_STUB_LIBRARY => Unavailable {
                what: "no NVIDIA driver is loaded (libcuda.so.1 is the CUDA toolkit's stub library)"
                    .to_owned(),
                help: "run on a machine with an NVIDIA GPU and its driver, and keep the toolkit's `stubs` directory out of LD_LIBRARY_PATH; or use `--device cpu`"
                    .to_owned(),
            },
            CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
            | CUresult::CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE => Unavailable {
                what: format!("the NVIDIA driver cannot be used ({e})"),
                help: "the kernel module and libcuda.so.1 are of different driver versions; reinstall the driver or reboot"
                    .to_owned(),
            },
            _ => Unavailable {
                what: format!("the CUDA driver failed to start ({e})"),
                help: "check `nvidia-smi`; xp's CUDA build needs a driver for CUDA 13.0 or newer; or use `--device cpu`"
                    .to_owned(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spec::Device::{Auto, Cpu, Cuda};

    fn gpus(n: usize) -> Result<Result<usize, Unavailable>, ()> {
        Ok(Ok(n))
    }

    /// The schema accepts exactly the devices `parse` reads (an index too large for usize is
    /// an error, not some other device).
    #[test]
    fn the_schema_and_parse_agree() {
        use crate::front::schema::Format;
        for (text, ok) in [
            ("auto", true),
            ("cpu", true),
            ("cuda", true),
            ("cuda:3", true),
            ("cuda:", false),
            ("cuda:-1", false),
            ("gpu", false),
            ("cuda:99999999999999999999999", false),
        ] {
            assert_eq!(Format::Device.accepts_str(text), ok, "{text}");
            assert_eq!(parse(text).is_ok(), ok, "{text}");
        }
    }

    fn broken() -> Result<Result<usize, Unavailable>, ()> {
        Ok(Err(Unavailable {
            what: "no NVIDIA driver is loaded".into(),
            help: "install one".into(),
        }))
    }

    fn spec(device: &str) -> RunSpec {
        let text =
            format!("experiment \"t\" {{\n    device \"{device}\"\n    data \"regression\"\n}}");
        let checked = crate::front::validate_text("t.kdl", &text);
        checked.plans[0].runs[0].config.clone()
    }

    /// What `open_device` does on this machine agrees with what the driver reports (without a
    /// GPU: auto falls back with a note, cuda is refused; with one: both open cuda:0).
    #[test]
    fn open_device_follows_the_driver() {
        let gpu = matches!(cuda_devices(), Ok(Ok(n)) if n > 0);
        let (device, name, note) = open_device(&spec("auto"), None).expect("auto always opens");
        assert_eq!(device.is_cuda(), gpu);
        if gpu {
            assert_eq!((name.as_str(), note), ("cuda:0", None));
        } else {
            assert_eq!(name, "cpu");
            assert_eq!(note.is_some(), cuda_devices().is_ok(), "{note:?}");
        }
        let cuda = open_device(&spec("cuda"), None);
        assert_eq!(cuda.is_ok(), gpu, "{:?}", cuda.as_ref().err());
        let (device, name, note) = open_device(&spec("cuda"), Some("cpu")).expect("the flag wins");
        assert_eq!((device.is_cpu(), name.as_str(), note), (true, "cpu", None));
        let bad = open_device(&spec("auto"), Some("gpu")).err();
        assert_eq!(
            bad.as_deref(),
            Some(
                "`gpu` is not a device; a device is auto, cpu, cuda or cuda:N (N counting from 0)"
            )
        );
    }

    #[test]
    fn parses_devices() {
        assert_eq!(parse("auto"), Ok(Auto));
        assert_eq!(parse("cpu"), Ok(Cpu));
        assert_eq!(parse("cuda"), Ok(Cuda(None)));
        assert_eq!(parse("cuda:3"), Ok(Cuda(Some(3))));
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", "CPU", ""] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.what, format!("`{bad}` is not a device"));
        }
    }

    #[test]
    fn auto_takes_the_first_gpu_or_falls_back_with_a_note() {
        let r = resolve_with(Auto, gpus(2)).unwrap();
        assert_eq!((r.name(), r.note), ("cuda:0".into(), None));
        let r = resolve_with(Auto, Err(())).unwrap();
        assert_eq!((r.name(), r.note), ("cpu".into(), None));
        let r = resolve_with(Auto, gpus(0)).unwrap();
        assert_eq!(r.name(), "cpu");
        assert_eq!(
            r.note.as_deref(),
            Some("device auto: no CUDA device found, training on the CPU")
        );
        let r = resolve_with(Auto, broken()).unwrap();
        assert_eq!(
            r.note.as_deref(),
            Some("device auto: no NVIDIA driver is loaded, training on the CPU")
        );
    }

    #[test]
    fn cuda_requests_say_what_is_missing() {
        assert_eq!(resolve_with(Cuda(None), gpus(1)).unwrap().name(), "cuda:0");
        assert_eq!(
            resolve_with(Cuda(Some(1)), gpus(2)).unwrap().name(),
            "cuda:1"
        );
        assert_eq!(resolve_with(Cpu, broken()).unwrap().name(), "cpu");
        let e = resolve_with(Cuda(Some(2)), gpus(2)).unwrap_err();
        assert_eq!(
            e.what,
            "device `cuda:2` does not exist: this machine has 2 CUDA devices, cuda:0 to cuda:1"
        );
        let e = resolve_with(Cuda(Some(1)), gpus(1)).unwrap_err();
        assert_eq!(
            e.what,
            "device `cuda:1` does not exist: this machine has one CUDA device, cuda:0"
        );
        let e = resolve_with(Cuda(None), gpus(0)).unwrap_err();
        assert_eq!(e.what, "device `cuda`: no CUDA device found");
        let e = resolve_with(Cuda(None), broken()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "device `cuda` cannot be used: no NVIDIA driver is loaded; install one"
        );
        let e = resolve_with(Cuda(Some(0)), Err(())).unwrap_err();
        assert_eq!(e.what, "device `cuda:0` needs a CUDA build of xp");
    }
}
