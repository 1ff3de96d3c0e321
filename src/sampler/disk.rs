//! Block device counters for node_exporter's diskstats collector: /proc/diskstats, and the
//! udev properties node_disk_info carries (/run/udev/data/b<major>:<minor>).
//!
//! The counters are read at each scrape (sampler/live.rs); parsing is apart from reading so
//! it is tested on fixed text.

use std::{fs, path::Path};

use super::net::FieldFilter;

/// /proc/diskstats fields after major, minor and name: reads completed, merged, sectors
/// read, ms reading; the same four for writes; I/Os in progress, ms doing I/O, weighted ms;
/// (4.18+) discards completed, merged, sectors, ms; (5.5+) flushes completed, ms.
pub const FIELDS: usize = 17;

/// One block device's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    pub device: String,
    pub major: String,
    pub minor: String,
    pub stats: [u64; FIELDS],
    /// How many of `stats` the kernel gave (11, 15 or 17).
    pub fields: usize,
}

/// The devices of a /proc/diskstats text that `exclude` does not match.
pub fn parse(text: &str, mut exclude: Option<&mut FieldFilter>) -> Vec<Disk> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let mut words = line.split_ascii_whitespace();
            let (major, minor, device) = (words.next()?, words.next()?, words.next()?);
            if exclude.as_mut().is_some_and(|r| r.matches(i, device)) {
                return None;
            }
            let mut stats = [0u64; FIELDS];
            let mut fields = 0;
            for (slot, word) in stats.iter_mut().zip(words) {
                *slot = word.parse().ok()?;
                fields += 1;
            }
            (fields >= 11).then(|| Disk {
                device: device.to_owned(),
                major: major.to_owned(),
                minor: minor.to_owned(),
                stats,
                fields,
            })
        })
        .collect()
}

/// node_disk_info's udev labels, in node_exporter's order after device, major and minor:
/// path, wwn, model, serial, revision (empty when udev has no data, as in a container).
pub type Info = [String; 5];

/// The udev properties of a block device, from udev's database.
pub fn info(major: &str, minor: &str) -> Info {
    let text = fs::read_to_string(Path::new("/run/udev/data").join(format!("b{major}:{minor}")))
        .unwrap_or_default();
    parse_udev(&text)
}

/// The properties node_disk_info carries, from a udev database entry (`E:KEY=value` lines).
pub fn parse_udev(text: &str) -> Info {
    let mut info: Info = Default::default();
    for line in text.lines() {
        let Some((key, value)) = line.strip_prefix("E:").and_then(|l| l.split_once('=')) else {
            continue;
        };
        let slot = match key {
            "ID_PATH" => 0,
            "ID_WWN" => 1,
            "ID_MODEL" => 2,
            "ID_SERIAL_SHORT" => 3,
            "ID_REVISION" => 4,
            _ => continue,
        };
        info[slot] = value.to_owned();
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_lite::Regex;

    /// Devices with 11, 15 and 17 fields parse; the default exclusion drops loop devices and
    /// partitions of whole disks it reports, not mmcblk partitions or zram.
    #[test]
    fn diskstats_lines() {
        let text = "   7       0 loop0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
                    254       0 vda 1138502 21968 72094210 4201708 104306 197945 193464896 1059017 0 154380 5291765 116650 50 115006776 30700 5050 338\n\
                    254       1 vda1 1 2 3 4 5 6 7 8 9 10 11\n\
                    179       0 mmcblk0 10 0 80 5 2 0 16 3 0 7 8 0 0 0 0\n\
                    179       1 mmcblk0p1 10 0 80 5 2 0 16 3 0 7 8\n\
                    253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
                    bad line\n";
        let exclude = Regex::new(crate::config::DISK_DEVICES_EXCLUDE).unwrap();
        let disks = parse(text, Some(&mut FieldFilter::new(exclude)));
        let names: Vec<_> = disks.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["vda", "mmcblk0", "mmcblk0p1", "zram0"]);
        assert_eq!(disks[0].fields, 17);
        assert_eq!(disks[0].stats[2], 72_094_210);
        assert_eq!(disks[0].stats[16], 338);
        assert_eq!((disks[1].fields, disks[2].fields), (15, 11));
        assert_eq!(parse(text, None).len(), 6);
    }

    /// udev's database gives path, wwn, model, serial and revision; missing keys are empty.
    #[test]
    fn udev_properties() {
        let info = parse_udev(
            "S:disk/by-id/x\nE:ID_MODEL=SD32G\nE:ID_SERIAL_SHORT=0x1234\nE:ID_PATH=platform-fe340000.mmc\nE:OTHER=1\n",
        );
        assert_eq!(
            info,
            ["platform-fe340000.mmc", "", "SD32G", "0x1234", ""].map(String::from)
        );
    }
}
