//! The `[logging]` configuration (and `--log-format`, `--log-collector`) turned into a
//! [`LogConfig`]: every value checked, a bad one refused naming the key and the value.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Format, LogConfig};
use crate::config::LoggingFile;

/// What the NAT logs besides exhaustion and quota events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Events {
    /// One record per session created and one per session deleted (the default without
    /// port blocks).
    Sessions,
    /// No session records: port blocks (when on), exhaustion and quota events only (the
    /// default with port blocks).
    None,
}

/// Translation logging as configured: the logger's settings and what to log.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// The logger's configuration (`workers` is set when the gateway starts).
    pub cfg: LogConfig,
    /// What is logged (`None`: the default, sessions unless port blocks are on).
    pub events: Option<Events>,
}

fn bad(key: &str, value: impl std::fmt::Display, why: &str) -> String {
    format!("invalid {key} = {value}: {why}")
}

fn within<T: TryFrom<u64> + Copy>(
    key: &str,
    v: Option<u64>,
    lo: u64,
    hi: u64,
    default: T,
) -> Result<T, String> {
    match v {
        None => Ok(default),
        Some(x) if (lo..=hi).contains(&x) => {
            T::try_from(x).map_err(|_| bad(key, x, "out of range"))
        }
        Some(x) => Err(bad(key, x, &format!("must be within {lo}..={hi}"))),
    }
}

/// The logging settings from the file's `[logging]` and the flags (flags win); `None` when
/// no format is given (no translation logs).
pub fn log_settings(
    f: &LoggingFile,
    format_flag: Option<&str>,
    collector_flag: Option<&str>,
) -> Result<Option<LogSettings>, String> {
    let (format_key, format) = match (format_flag, f.format.as_deref()) {
        (Some(v), _) => ("--log-format", v),
        (None, Some(v)) => ("logging.format", v),
        (None, None) => {
            if collector_flag.is_some() || f.collector.is_some() {
                return Err(
                    "a log collector is given but no format: set --log-format (or logging.format) to ipfix or syslog"
                        .into(),
                );
            }
            return Ok(None);
        }
    };
    let format = match format {
        "ipfix" => Format::Ipfix,
        "syslog" => Format::Syslog,
        "off" | "none" => return Ok(None),
        other => {
            return Err(bad(
                format_key,
                format!("{other:?}"),
                "expected ipfix, syslog or off",
            ))
        }
    };
    let (collector_key, collector) = match (collector_flag, f.collector.as_deref()) {
        (Some(v), _) => ("--log-collector", v),
        (None, Some(v)) => ("logging.collector", v),
        (None, None) => {
            return Err(format!(
                "{format_key} is set but no collector: give --log-collector ADDR:PORT (or logging.collector)"
            ))
        }
    };
    let addr = |key: &str, v: &str| -> Result<SocketAddr, String> {
        v.parse::<SocketAddr>()
            .map_err(|_| bad(key, format!("{v:?}"), "expected ADDR:PORT"))
    };
    let collector = addr(collector_key, collector)?;
    if collector.port() == 0 {
        return Err(bad(collector_key, collector, "the port must not be 0"));
    }
    let source = f
        .source
        .as_deref()
        .map(|v| addr("logging.source", v))
        .transpose()?;
    let events = match f.events.as_deref() {
        None => None,
        Some("sessions") => Some(Events::Sessions),
        Some("none") => Some(Events::None),
        Some(other) => {
            return Err(bad(
                "logging.events",
                format!("{other:?}"),
                "expected sessions or none",
            ))
        }
    };
    let d = LogConfig::default();
    let cfg = LogConfig {
        format,
        collector,
        source,
        workers: 1,
        ring_size: within("logging.ring_size", f.ring_size, 1, 1 << 24, d.ring_size)?,
        mtu: within("logging.mtu", f.mtu, 1, 65507, d.mtu)?,
        flush_interval: Duration::from_millis(within(
            "logging.flush_interval_ms",
            f.flush_interval_ms,
            1,
            1000,
            1000u64,
        )?),
        template_refresh: Duration::from_secs(within(
            "logging.template_refresh_secs",
            f.template_refresh_secs,
            1,
            3600,
            60u64,
        )?),
        template_refresh_messages: within(
            "logging.template_refresh_messages",
            f.template_refresh_messages,
            1,
            u64::from(u32::MAX),
            d.template_refresh_messages,
        )?,
        observation_domain: within(
            "logging.observation_domain",
            f.observation_domain,
            0,
            u64::from(u32::MAX),
            d.observation_domain,
        )?,
        destinations: f.destinations.unwrap_or(false),
        syslog_facility: within(
            "logging.syslog_facility",
            f.syslog_facility,
            0,
            23,
            d.syslog_facility,
        )?,
        hostname: f.hostname.clone(),
        poll: d.poll,
    };
    // The module's own checks (the message size against the templates, ...).
    cfg.validate().map_err(|e| format!("invalid {e}"))?;
    Ok(Some(LogSettings { cfg, events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> LoggingFile {
        crate::config::FileConfig::parse(text).unwrap().logging
    }

    #[test]
    fn logging_is_off_unless_a_format_is_given() {
        assert!(log_settings(&LoggingFile::default(), None, None)
            .unwrap()
            .is_none());
        let s = log_settings(
            &LoggingFile::default(),
            Some("ipfix"),
            Some("198.19.0.2:4739"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.cfg.format, Format::Ipfix);
        assert_eq!(s.events, None);
        let f = file(
            "[logging]\nformat='syslog'\ncollector='198.19.0.2:514'\nmtu=9000\nevents='none'\n",
        );
        let s = log_settings(&f, None, None).unwrap().unwrap();
        assert_eq!(
            (s.cfg.format, s.cfg.mtu, s.events),
            (Format::Syslog, 9000, Some(Events::None))
        );
        // A flag wins over the file.
        let s = log_settings(&f, Some("ipfix"), Some("198.19.0.3:4739"))
            .unwrap()
            .unwrap();
        assert_eq!(s.cfg.collector, "198.19.0.3:4739".parse().unwrap());
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        for (text, flag, key, value) in [
            (
                "[logging]\nformat='netflow'\ncollector='198.19.0.2:1'\n",
                None,
                "logging.format",
                "netflow",
            ),
            (
                "[logging]\nformat='ipfix'\n",
                None,
                "logging.format",
                "no collector",
            ),
            (
                "[logging]\nformat='ipfix'\ncollector='here'\n",
                None,
                "logging.collector",
                "here",
            ),
            (
                "[logging]\nformat='ipfix'\ncollector='198.19.0.2:4739'\nring_size=0\n",
                None,
                "logging.ring_size",
                "0",
            ),
            (
                "[logging]\nformat='ipfix'\ncollector='198.19.0.2:4739'\nmtu=100\n",
                None,
                "logging.mtu",
                "100",
            ),
            (
                "[logging]\nformat='ipfix'\ncollector='198.19.0.2:4739'\nflush_interval_ms=5000\n",
                None,
                "logging.flush_interval_ms",
                "5000",
            ),
            (
                "[logging]\nformat='syslog'\ncollector='198.19.0.2:514'\nsyslog_facility=24\n",
                None,
                "logging.syslog_facility",
                "24",
            ),
            (
                "[logging]\nformat='ipfix'\ncollector='198.19.0.2:4739'\nevents='all'\n",
                None,
                "logging.events",
                "all",
            ),
            (
                "[logging]\ncollector='198.19.0.2:4739'\n",
                None,
                "format",
                "collector",
            ),
            ("", Some("gelf"), "--log-format", "gelf"),
        ] {
            let e = log_settings(&file(text), flag, flag.map(|_| "198.19.0.2:1")).unwrap_err();
            assert!(e.contains(key) && e.contains(value), "{text:?}: {e}");
        }
    }
}
