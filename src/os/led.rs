//! The fault LED: a GPIO line, a sysfs LED class device, or nothing.
//!
//! [`FaultLed`] owns the polarity and writes the pin only when the level changes, so the
//! agent can call [`FaultLed::set`] at every pattern edge. The backends ([`AnyPin`]) only
//! drive a level: GPIO lines are requested without the kernel's ACTIVE_LOW flag (CdevPin
//! undoes it anyway), and polarity is applied in one place, here.
//!
//! Invariants:
//! - Devices are opened once, by [`open`], which leaves the LED off; setting it afterwards
//!   allocates nothing (one ioctl or one pwrite).
//! - After a failed write the level is unknown, so the next `set` writes again.
//! - A sysfs LED name is a single path component: it cannot reach outside the LED class
//!   directory.

use core::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use embedded_hal::digital::{self, ErrorType, OutputPin};
use linux_embedded_hal::gpio_cdev::{self, Chip, LineRequestFlags};
use linux_embedded_hal::{CdevPin, CdevPinError};
use nix::errno::Errno;

/// Where sysfs LEDs live.
const SYSFS_LEDS: &str = "/sys/class/leds";
/// The consumer label shown by `gpioinfo` for a line we hold.
const CONSUMER: &str = "watchkeeper";

/// Which LED the configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedSpec {
    /// A line of a GPIO character device, e.g. `/dev/gpiochip0` line 17.
    Gpio {
        chip: PathBuf,
        line: u32,
        active_low: bool,
    },
    /// `/sys/class/leds/NAME`.
    Sysfs {
        name: String,
        active_low: bool,
    },
    None,
}

/// Opens the LED the spec names and switches it off.
pub fn open(spec: &LedSpec) -> Result<FaultLed<AnyPin>, LedError> {
    let (pin, active_low) = match spec {
        LedSpec::Gpio {
            chip,
            line,
            active_low,
        } => (
            AnyPin::Gpio(GpioLed::open(chip, *line, *active_low)?),
            *active_low,
        ),
        LedSpec::Sysfs { name, active_low } => (
            AnyPin::Sysfs(SysfsLed::open_at(Path::new(SYSFS_LEDS), name)?),
            *active_low,
        ),
        LedSpec::None => (AnyPin::None, false),
    };
    let mut led = FaultLed::new(pin, active_low);
    led.visible = !matches!(spec, LedSpec::None);
    led.set(false)?;
    Ok(led)
}

/// An LED behind an output pin, with its polarity.
#[derive(Debug)]
pub struct FaultLed<P: OutputPin> {
    pin: P,
    active_low: bool,
    /// The level last written successfully; `None` before the first write and after a failure.
    lit: Option<bool>,
    /// Someone can see it: without an LED the loop does not wake for its edges.
    visible: bool,
}

impl<P: OutputPin<Error = PinError>> FaultLed<P> {
    pub fn new(pin: P, active_low: bool) -> Self {
        FaultLed {
            pin,
            active_low,
            lit: None,
            visible: true,
        }
    }

    /// Whether there is an LED to blink (the `none` LED is not).
    pub fn visible(&self) -> bool {
        self.visible
    }

    /// Lights the LED or puts it out; a no-op if it already is.
    pub fn set(&mut self, on: bool) -> Result<(), LedError> {
        if self.lit == Some(on) {
            return Ok(());
        }
        self.lit = None;
        if on != self.active_low {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        }
        .map_err(LedError::Write)?;
        self.lit = Some(on);
        Ok(())
    }
}

/// One of the backends, so the agent holds a single `FaultLed<AnyPin>` type.
#[derive(Debug)]
pub enum AnyPin {
    Gpio(GpioLed),
    Sysfs(SysfsLed),
    /// No LED configured: every write succeeds and does nothing.
    None,
}

impl ErrorType for AnyPin {
    type Error = PinError;
}

impl OutputPin for AnyPin {
    fn set_low(&mut self) -> Result<(), PinError> {
        match self {
            AnyPin::Gpio(led) => led.drive(false),
            AnyPin::Sysfs(led) => led.drive(false),
            AnyPin::None => Ok(()),
        }
    }

    fn set_high(&mut self) -> Result<(), PinError> {
        match self {
            AnyPin::Gpio(led) => led.drive(true),
            AnyPin::Sysfs(led) => led.drive(true),
            AnyPin::None => Ok(()),
        }
    }
}

/// A GPIO line requested as an output through the character device.
pub struct GpioLed {
    pin: CdevPin,
    chip: Arc<Path>,
    line: u32,
}

impl fmt::Debug for GpioLed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpioLed({} line {})", self.chip.display(), self.line)
    }
}

impl GpioLed {
    /// Requests `line` of `chip` as an output, driven to the LED's off level.
    pub fn open(chip_path: &Path, line: u32, active_low: bool) -> Result<GpioLed, LedError> {
        let chip: Arc<Path> = Arc::from(chip_path);
        let mut gpio = Chip::new(chip_path).map_err(|cause| LedError::Chip {
            chip: chip.clone(),
            cause,
        })?;
        let lines = gpio.num_lines();
        if line >= lines {
            return Err(LedError::NoSuchLine { chip, line, lines });
        }
        let request_error = |cause| LedError::Request {
            chip: chip.clone(),
            line,
            cause,
        };
        let gpio_line = gpio.get_line(line).map_err(request_error)?;
        let info = gpio_line.info().map_err(request_error)?;
        // "Kernel" is the uAPI's name for "requested by anyone", userspace included.
        if info.is_kernel() {
            return Err(LedError::LineBusy {
                chip,
                line,
                consumer: info.consumer().unwrap_or("unnamed").to_owned(),
            });
        }
        let off_level = u8::from(active_low);
        let handle = gpio_line
            .request(LineRequestFlags::OUTPUT, off_level, CONSUMER)
            .map_err(request_error)?;
        let pin = CdevPin::new(handle).map_err(request_error)?;
        Ok(GpioLed { pin, chip, line })
    }

    fn drive(&mut self, high: bool) -> Result<(), PinError> {
        if high {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        }
        .map_err(|cause| PinError::Gpio {
            chip: self.chip.clone(),
            line: self.line,
            cause,
        })
    }
}

/// An LED class device: `brightness` is opened once and rewritten in place.
#[derive(Debug)]
pub struct SysfsLed {
    brightness: File,
    path: Arc<Path>,
    /// `max_brightness` as read at startup: "on" means fully on, whatever the LED's scale
    /// (a u32, so at most 10 digits).
    on: heapless::String<10>,
}

impl SysfsLed {
    /// Opens `base/name/brightness` and writes 0 to it, which also detaches any kernel
    /// trigger (heartbeat, mmc0, ...) that would otherwise keep blinking the LED.
    pub(crate) fn open_at(base: &Path, name: &str) -> Result<SysfsLed, LedError> {
        if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
            return Err(LedError::BadName {
                name: name.to_owned(),
            });
        }
        let dir = base.join(name);
        let max_path = dir.join("max_brightness");
        let max = std::fs::read_to_string(&max_path).map_err(|cause| LedError::Sysfs {
            path: max_path.clone(),
            cause,
        })?;
        let max = match max.trim().parse::<u32>() {
            Ok(max) if max > 0 => max,
            _ => return Err(LedError::BadMax { path: max_path }),
        };
        let mut on = heapless::String::new();
        fmt::write(&mut on, format_args!("{max}"))
            .map_err(|_| LedError::BadMax { path: max_path })?;
        let path = dir.join("brightness");
        let brightness = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|cause| LedError::Sysfs {
                path: path.clone(),
                cause,
            })?;
        let mut led = SysfsLed {
            brightness,
            path: Arc::from(path),
            on,
        };
        led.drive(false).map_err(LedError::Write)?;
        Ok(led)
    }

    fn drive(&mut self, high: bool) -> Result<(), PinError> {
        let value = if high { self.on.as_bytes() } else { b"0" };
        // A sysfs attribute takes the whole value in one write at offset 0.
        match self.brightness.write_at(value, 0) {
            Ok(n) if n == value.len() => Ok(()),
            Ok(_) => Err(self.write_error(Errno::EIO)),
            Err(e) => Err(self.write_error(e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))),
        }
    }

    fn write_error(&self, errno: Errno) -> PinError {
        PinError::Sysfs {
            path: self.path.clone(),
            errno,
        }
    }
}

/// A failed LED write, naming the device. Building one allocates nothing.
#[derive(Debug)]
pub enum PinError {
    Gpio {
        chip: Arc<Path>,
        line: u32,
        cause: CdevPinError,
    },
    Sysfs {
        path: Arc<Path>,
        errno: Errno,
    },
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::Gpio { chip, line, cause } => {
                write!(f, "{} line {line}: {cause}", chip.display())
            }
            PinError::Sysfs { path, errno } => write!(f, "{}: {errno}", path.display()),
        }
    }
}

impl digital::Error for PinError {
    fn kind(&self) -> digital::ErrorKind {
        digital::ErrorKind::Other
    }
}

/// Why the fault LED cannot be used. Each names the device and what to do.
#[derive(Debug)]
pub enum LedError {
    /// The GPIO chip cannot be opened.
    Chip {
        chip: Arc<Path>,
        cause: gpio_cdev::Error,
    },
    /// The chip has fewer lines than the configured offset.
    NoSuchLine {
        chip: Arc<Path>,
        line: u32,
        lines: u32,
    },
    /// Another consumer (a kernel driver or a program) holds the line.
    LineBusy {
        chip: Arc<Path>,
        line: u32,
        consumer: String,
    },
    /// The line could not be requested as an output.
    Request {
        chip: Arc<Path>,
        line: u32,
        cause: gpio_cdev::Error,
    },
    /// The sysfs LED name is not a single path component.
    BadName { name: String },
    /// A sysfs LED file cannot be read or opened.
    Sysfs { path: PathBuf, cause: io::Error },
    /// `max_brightness` is not a positive integer.
    BadMax { path: PathBuf },
    /// Driving the LED failed at run time.
    Write(PinError),
}

impl fmt::Display for LedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedError::Chip { chip, cause } => write!(
                f,
                "{}: cannot open the GPIO chip: {cause}: check the chip path (ls /dev/gpiochip*)",
                chip.display()
            ),
            LedError::NoSuchLine { chip, line, lines } => write!(
                f,
                "{}: no line {line}: the chip has {lines} lines (0 to {}): check the line \
                 offset (gpioinfo)",
                chip.display(),
                lines.saturating_sub(1)
            ),
            LedError::LineBusy {
                chip,
                line,
                consumer,
            } => write!(
                f,
                "{} line {line}: held by another consumer ({consumer:?}): free it (device tree \
                 gpio-leds, another program) or choose another line",
                chip.display()
            ),
            LedError::Request { chip, line, cause } => write!(
                f,
                "{} line {line}: cannot request it as an output: {cause}",
                chip.display()
            ),
            LedError::BadName { name } => write!(
                f,
                "fault LED name {name:?} is not an entry of {SYSFS_LEDS}: give the bare name \
                 (ls {SYSFS_LEDS})"
            ),
            LedError::Sysfs { path, cause } => write!(
                f,
                "{}: {cause}: check the LED name (ls {SYSFS_LEDS})",
                path.display()
            ),
            LedError::BadMax { path } => write!(
                f,
                "{}: not a positive integer: is this an LED class device?",
                path.display()
            ),
            LedError::Write(e) => write!(
                f,
                "cannot drive the fault LED: {e}: it shows a stale level until a write succeeds"
            ),
        }
    }
}

impl std::error::Error for LedError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Records every level written; fails the writes it is told to.
    #[derive(Default)]
    struct FakePin {
        writes: Vec<bool>,
        fail_next: bool,
    }

    impl ErrorType for FakePin {
        type Error = PinError;
    }

    impl OutputPin for FakePin {
        fn set_low(&mut self) -> Result<(), PinError> {
            self.write(false)
        }
        fn set_high(&mut self) -> Result<(), PinError> {
            self.write(true)
        }
    }

    impl FakePin {
        fn write(&mut self, high: bool) -> Result<(), PinError> {
            if std::mem::take(&mut self.fail_next) {
                return Err(PinError::Sysfs {
                    path: Arc::from(Path::new("/fake")),
                    errno: Errno::EIO,
                });
            }
            self.writes.push(high);
            Ok(())
        }
    }

    #[test]
    fn writes_only_on_change() {
        let mut led = FaultLed::new(FakePin::default(), false);
        for on in [false, false, true, true, true, false, true] {
            led.set(on).unwrap();
        }
        assert_eq!(led.pin.writes, [false, true, false, true]);
    }

    #[test]
    fn active_low_inverts() {
        let mut led = FaultLed::new(FakePin::default(), true);
        led.set(true).unwrap();
        led.set(false).unwrap();
        assert_eq!(led.pin.writes, [false, true]);
    }

    #[test]
    fn failed_write_is_retried() {
        let mut led = FaultLed::new(FakePin::default(), false);
        led.set(false).unwrap();
        led.pin.fail_next = true;
        let err = led.set(true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot drive the fault LED: /fake: EIO: I/O error: it shows a stale level until a \
             write succeeds"
        );
        led.set(true).unwrap();
        assert_eq!(led.pin.writes, [false, true]);
    }

    /// A fresh directory standing in for /sys/class/leds.
    fn fake_leds(max: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir().join(format!(
            "watchkeeper-led-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let dir = base.join("status");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("max_brightness"), max).unwrap();
        std::fs::write(dir.join("brightness"), "1").unwrap();
        base
    }

    #[test]
    fn sysfs_writes_max_brightness_and_zero() {
        let base = fake_leds("255\n");
        let brightness = base.join("status/brightness");
        let read = || std::fs::read_to_string(&brightness).unwrap();

        let mut led = FaultLed::new(
            AnyPin::Sysfs(SysfsLed::open_at(&base, "status").unwrap()),
            false,
        );
        assert_eq!(read(), "0", "opening puts the LED out");
        led.set(true).unwrap();
        assert_eq!(read(), "255");
        led.set(false).unwrap();
        // A regular file keeps the tail that sysfs would discard.
        assert!(read().starts_with('0'));
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn sysfs_rejects_bad_names_and_files() {
        let base = fake_leds("0");
        for name in ["", ".", "..", "../x", "a/b", "nul\0"] {
            let err = SysfsLed::open_at(&base, name).unwrap_err();
            assert!(matches!(err, LedError::BadName { .. }), "{name:?}: {err}");
        }
        let err = SysfsLed::open_at(&base, "status").unwrap_err();
        assert!(matches!(err, LedError::BadMax { .. }), "{err}");
        let err = SysfsLed::open_at(&base, "missing").unwrap_err();
        assert!(err.to_string().contains("missing/max_brightness"), "{err}");
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn sysfs_write_failure_names_the_file() {
        let base = fake_leds("1");
        let brightness = base.join("status/brightness");
        std::fs::remove_file(&brightness).unwrap();
        // Every write to /dev/full fails with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", &brightness).unwrap();
        let err = SysfsLed::open_at(&base, "status").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot drive the fault LED: ")
                && text.contains("status/brightness: ENOSPC"),
            "{text}"
        );
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn no_led_accepts_everything() {
        let mut led = open(&LedSpec::None).unwrap();
        led.set(true).unwrap();
        led.set(false).unwrap();
    }

    #[test]
    fn missing_chip_is_named() {
        let spec = LedSpec::Gpio {
            chip: PathBuf::from("/dev/watchkeeper-no-chip"),
            line: 3,
            active_low: false,
        };
        let err = open(&spec).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/dev/watchkeeper-no-chip: cannot open the GPIO chip"),
            "{err}"
        );
    }
}
