//! Interface properties from /sys/class/net/<iface>, as node_exporter's netclass collector
//! reports them (node_network_up, _mtu_bytes, _speed_bytes, _info, ...). About twenty
//! small sysfs files an interface, so sampler/live.rs reads them at most once per
//! `NETCLASS_TTL` rather than at every scrape; they rarely change.

use std::{fs, path::Path};

use regex_lite::Regex;

/// How a property file's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// A decimal integer.
    Plain,
    /// `0x`-prefixed hex (dev_id, flags).
    Hex,
    /// Mbit/s to bytes/s (speed; node_exporter multiplies -1 too).
    Mbits,
}

/// (sysfs file, node_exporter's name after `node_network_`, is a counter, scale), in the
/// order node_exporter's families sort.
pub const PROPERTIES: [(&str, &str, bool, Scale); 17] = [
    (
        "addr_assign_type",
        "address_assign_type",
        false,
        Scale::Plain,
    ),
    ("carrier", "carrier", false, Scale::Plain),
    (
        "carrier_changes",
        "carrier_changes_total",
        true,
        Scale::Plain,
    ),
    (
        "carrier_down_count",
        "carrier_down_changes_total",
        true,
        Scale::Plain,
    ),
    (
        "carrier_up_count",
        "carrier_up_changes_total",
        true,
        Scale::Plain,
    ),
    ("dev_id", "device_id", false, Scale::Hex),
    ("dormant", "dormant", false, Scale::Plain),
    ("flags", "flags", false, Scale::Hex),
    ("ifindex", "iface_id", false, Scale::Plain),
    ("iflink", "iface_link", false, Scale::Plain),
    ("link_mode", "iface_link_mode", false, Scale::Plain),
    ("mtu", "mtu_bytes", false, Scale::Plain),
    ("name_assign_type", "name_assign_type", false, Scale::Plain),
    ("netdev_group", "net_dev_group", false, Scale::Plain),
    ("type", "protocol_type", false, Scale::Plain),
    ("speed", "speed_bytes", false, Scale::Mbits),
    ("tx_queue_len", "transmit_queue_length", false, Scale::Plain),
];

/// One interface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetClass {
    pub device: String,
    /// node_network_info's labels: address, broadcast, duplex, ifalias, operstate.
    pub address: String,
    pub broadcast: String,
    pub duplex: String,
    pub ifalias: String,
    pub operstate: String,
    /// [`PROPERTIES`]' values; `None` where the file is missing or unreadable (carrier of an
    /// interface that is down, speed of a virtual one).
    pub values: [Option<f64>; 17],
}

/// Every interface under `class` (normally /sys/class/net) that `exclude` does not match,
/// sorted by name.
pub fn read(class: &Path, exclude: Option<&Regex>) -> Vec<NetClass> {
    let Ok(entries) = fs::read_dir(class) else {
        return Vec::new();
    };
    let mut out: Vec<NetClass> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let device = entry.file_name().into_string().ok()?;
            // bonding_masters and other plain files are not interfaces.
            if !entry.path().is_dir() || exclude.is_some_and(|r| r.is_match(&device)) {
                return None;
            }
            Some(read_one(&entry.path(), device))
        })
        .collect();
    out.sort_by(|a, b| a.device.cmp(&b.device));
    out
}

fn read_one(dir: &Path, device: String) -> NetClass {
    let text = |file: &str| {
        fs::read_to_string(dir.join(file))
            .map(|s| s.trim().to_owned())
            .ok()
    };
    let mut class = NetClass {
        address: text("address").unwrap_or_default(),
        broadcast: text("broadcast").unwrap_or_default(),
        duplex: text("duplex").unwrap_or_default(),
        ifalias: text("ifalias").unwrap_or_default(),
        operstate: text("operstate").unwrap_or_default(),
        device,
        ..NetClass::default()
    };
    for (slot, (file, _, _, scale)) in class.values.iter_mut().zip(PROPERTIES) {
        *slot = text(file).and_then(|t| value(&t, scale));
    }
    class
}

/// A property file's text as node_exporter reads it.
pub fn value(text: &str, scale: Scale) -> Option<f64> {
    match scale {
        Scale::Plain => text.parse::<i64>().ok().map(|v| v as f64),
        Scale::Hex => i64::from_str_radix(text.trim_start_matches("0x"), 16)
            .ok()
            .map(|v| v as f64),
        Scale::Mbits => text.parse::<i64>().ok().map(|v| v as f64 * 125_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decimal, hex and Mbit/s properties read as node_exporter reads them, -1 speed too.
    #[test]
    fn property_values() {
        assert_eq!(value("1500", Scale::Plain), Some(1500.0));
        assert_eq!(value("0x1003", Scale::Hex), Some(4099.0));
        assert_eq!(value("1000", Scale::Mbits), Some(125_000_000.0));
        assert_eq!(value("-1", Scale::Mbits), Some(-125_000.0));
        assert_eq!(value("", Scale::Plain), None);
    }

    /// This machine's loopback interface has an MTU, an index and an operstate.
    #[test]
    fn this_machine_has_loopback() {
        let all = read(Path::new("/sys/class/net"), None);
        let lo = all.iter().find(|c| c.device == "lo").expect("lo");
        assert!(lo.values[11].is_some_and(|mtu| mtu > 0.0), "{lo:?}");
        assert!(lo.values[8].is_some(), "{lo:?}");
        assert!(!lo.operstate.is_empty());
        let none = read(Path::new("/sys/class/net"), Some(&Regex::new(".").unwrap()));
        assert!(none.is_empty());
    }
}
