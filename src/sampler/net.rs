//! The network sources node_exporter's netdev, netstat, sockstat, softnet, arp and
//! conntrack collectors read, all from /proc: parsers over fixed text, so they are tested
//! apart from the machine; sampler/live.rs reads the files at each scrape.

use regex_lite::Regex;

/// One interface's 16 /proc/net/dev counters, in the file's order: receive bytes, packets,
/// errs, drop, fifo, frame, compressed, multicast; transmit bytes, packets, errs, drop,
/// fifo, colls, carrier, compressed. `nohandler` is sysfs's rx_nohandler (absent: 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetDev {
    pub device: String,
    pub counters: [u64; 16],
    pub nohandler: Option<u64>,
}

/// node_exporter's names for [`NetDev::counters`], in order (family `node_network_<name>_total`).
pub const NETDEV_NAMES: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

/// The interfaces of a /proc/net/dev text that `exclude` does not match; lines that do not
/// parse (the two headers) are skipped.
pub fn parse_netdev(text: &str, mut exclude: Option<&mut FieldFilter>) -> Vec<NetDev> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            // Interface names cannot hold ':'; a long counter may touch the colon.
            let (name, rest) = line.split_once(':')?;
            let device = name.trim();
            if exclude.as_mut().is_some_and(|r| r.matches(i, device)) {
                return None;
            }
            let mut counters = [0u64; 16];
            let mut words = rest.split_ascii_whitespace();
            for slot in &mut counters {
                *slot = words.next()?.parse().ok()?;
            }
            Some(NetDev {
                device: device.to_owned(),
                counters,
                nohandler: None,
            })
        })
        .collect()
}

/// Which names of a name-value source are kept: a regular expression, its verdicts cached
/// for the names seen last (a kernel's list does not change between reads), so a read
/// costs a string comparison per name, not a regex match.
#[derive(Debug)]
pub struct FieldFilter {
    regex: Regex,
    seen: Vec<(String, bool)>,
}

impl FieldFilter {
    pub fn new(regex: Regex) -> FieldFilter {
        FieldFilter {
            regex,
            seen: Vec::new(),
        }
    }

    /// [`FieldFilter::keep`] for the name `{proto}_{name}`, without making it when the
    /// verdict is cached.
    pub fn keep_joined(&mut self, i: usize, proto: &str, name: &str) -> bool {
        if let Some((seen, keep)) = self.seen.get(i)
            && seen.len() == proto.len() + 1 + name.len()
            && seen.starts_with(proto)
            && seen.as_bytes()[proto.len()] == b'_'
            && seen.ends_with(name)
        {
            return *keep;
        }
        self.keep(i, &format!("{proto}_{name}"))
    }

    /// How many verdicts are cached.
    #[cfg(test)]
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Whether the `i`th name of the source, `name`, is kept.
    pub fn keep(&mut self, i: usize, name: &str) -> bool {
        self.matches(i, name)
    }

    /// Whether the regular expression matches `name`, the `i`th name of the source (for
    /// an exclusion: whether it is left out).
    pub fn matches(&mut self, i: usize, name: &str) -> bool {
        match self.seen.get(i) {
            Some((seen, keep)) if seen == name => *keep,
            _ => {
                let keep = self.regex.is_match(name);
                if i < self.seen.len() {
                    self.seen[i] = (name.to_owned(), keep);
                } else {
                    self.seen.resize(i, (String::new(), false));
                    self.seen.push((name.to_owned(), keep));
                }
                keep
            }
        }
    }
}

/// node_exporter's default `--collector.netstat.fields`.
pub const NETSTAT_FIELDS: &str = "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

/// The `Proto_Field` values of /proc/net/netstat or /proc/net/snmp (pairs of lines: the
/// names, then the values, each starting `Proto:`) that `filter` keeps, appended to `out`;
/// `offset` numbers the names across the files one filter sees.
pub fn parse_netstat(
    text: &str,
    filter: &mut FieldFilter,
    offset: &mut usize,
    out: &mut Vec<(String, f64)>,
) {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((proto, names)), Some((proto2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            return;
        };
        if proto != proto2 {
            return;
        }
        for (name, value) in names
            .split_ascii_whitespace()
            .zip(values.split_ascii_whitespace())
        {
            if filter.keep_joined(*offset, proto, name)
                && let Ok(value) = value.parse::<f64>()
            {
                out.push((format!("{proto}_{name}"), value));
            }
            *offset += 1;
        }
    }
}

/// The values of /proc/net/snmp6 (`Ip6InReceives 12` lines) that `filter` keeps, named as
/// node_exporter names them (`Ip6_InReceives`: the protocol ends at its first `6`).
pub fn parse_snmp6(
    text: &str,
    filter: &mut FieldFilter,
    offset: &mut usize,
    out: &mut Vec<(String, f64)>,
) {
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(six) = key.find('6') else { continue };
        let name = format!("{}_{}", &key[..=six], &key[six + 1..]);
        if filter.keep(*offset, &name)
            && let Ok(value) = value.parse::<f64>()
        {
            out.push((name, value));
        }
        *offset += 1;
    }
}

/// /proc/net/sockstat and sockstat6 as node_exporter names them: `sockets_used`, and
/// `PROTO_field` for the others, with `PROTO_mem_bytes` (pages times `page_size`) beside
/// each `mem`.
pub fn parse_sockstat(text: &str, page_size: u64, out: &mut Vec<(String, f64)>) {
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else {
            continue;
        };
        let words: Vec<&str> = rest.split_ascii_whitespace().collect();
        for pair in words.chunks_exact(2) {
            let Ok(value) = pair[1].parse::<f64>() else {
                continue;
            };
            if proto == "sockets" {
                out.push((format!("sockets_{}", pair[0]), value));
                continue;
            }
            out.push((format!("{proto}_{}", pair[0]), value));
            if pair[0] == "mem" {
                out.push((format!("{proto}_mem_bytes"), value * page_size as f64));
            }
        }
    }
}

/// Per CPU: processed, dropped, time_squeezed, from /proc/net/softnet_stat's hex columns.
pub fn parse_softnet(text: &str) -> Vec<[u64; 3]> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_ascii_whitespace();
            let mut row = [0u64; 3];
            for slot in &mut row {
                *slot = u64::from_str_radix(words.next()?, 16).ok()?;
            }
            Some(row)
        })
        .collect()
}

/// Entries per device in /proc/net/arp (the last column), in the order first seen.
pub fn parse_arp(text: &str, exclude: Option<&Regex>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for line in text.lines().skip(1) {
        let Some(device) = line.split_ascii_whitespace().nth(5) else {
            continue;
        };
        if exclude.is_some_and(|r| r.is_match(device)) {
            continue;
        }
        match out.iter_mut().find(|(d, _)| d == device) {
            Some((_, n)) => *n += 1,
            None => out.push((device.to_owned(), 1)),
        }
    }
    out
}

/// Connection tracking: the table's size and limit, and the per-CPU statistics summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conntrack {
    pub entries: Option<f64>,
    pub limit: Option<f64>,
    /// found, invalid, ignore, insert, insert_failed, drop, early_drop, search_restart
    /// (node_exporter's `node_nf_conntrack_stat_*`); `None` without /proc/net/stat/nf_conntrack.
    pub stats: Option<[f64; 8]>,
}

/// node_exporter's names for [`Conntrack::stats`], in order.
pub const CONNTRACK_STATS: [&str; 8] = [
    "found",
    "invalid",
    "ignore",
    "insert",
    "insert_failed",
    "drop",
    "early_drop",
    "search_restart",
];

/// /proc/net/stat/nf_conntrack: a header naming the columns, then one row of hex per CPU;
/// the columns node_exporter reports, summed over the CPUs (a column the kernel does not
/// have is 0).
pub fn parse_conntrack_stat(text: &str) -> Option<[f64; 8]> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_ascii_whitespace().collect();
    let columns = CONNTRACK_STATS.map(|name| header.iter().position(|h| *h == name));
    let mut sums = [0f64; 8];
    for line in lines {
        let row: Vec<u64> = line
            .split_ascii_whitespace()
            .filter_map(|w| u64::from_str_radix(w, 16).ok())
            .collect();
        for (sum, column) in sums.iter_mut().zip(columns) {
            if let Some(v) = column.and_then(|c| row.get(c)) {
                *sum += *v as f64;
            }
        }
    }
    Some(sums)
}

/// The bytes queued on all UDP sockets of a /proc/net/udp or udp6 text: (tx, rx), from
/// each line's hex `tx_queue:rx_queue` column (node_exporter's udp_queues collector).
pub fn parse_udp_queues(text: &str) -> Option<(f64, f64)> {
    let mut lines = text.lines();
    lines.next()?;
    let (mut tx, mut rx) = (0f64, 0f64);
    for line in lines {
        let Some((t, r)) = line
            .split_ascii_whitespace()
            .nth(4)
            .and_then(|q| q.split_once(':'))
        else {
            continue;
        };
        tx += u64::from_str_radix(t, 16).ok()? as f64;
        rx += u64::from_str_radix(r, 16).ok()? as f64;
    }
    Some((tx, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All 16 columns land in order, also when a counter touches the colon; excluded
    /// devices and headers are left out.
    #[test]
    fn netdev_columns() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
  eth0:60720230    3728    2    5    6     7          8         9   329887    2600    1    3   10    11      12         13
";
        let all = parse_netdev(text, None);
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[1].counters,
            [
                60_720_230, 3728, 2, 5, 6, 7, 8, 9, 329_887, 2600, 1, 3, 10, 11, 12, 13
            ]
        );
        let lo = Regex::new("^lo$").unwrap();
        let kept = parse_netdev(text, Some(&mut FieldFilter::new(lo)));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].device, "eth0");
    }

    /// netstat pairs of lines give `Proto_Field` values node_exporter's default field list
    /// keeps (negative ones included), snmp6 names split at their first 6, and the filter's
    /// cache gives the same verdicts on a second read.
    #[test]
    fn netstat_fields() {
        let snmp = "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 100\n\
                    Tcp: RtoAlgorithm MaxConn ActiveOpens CurrEstab InErrs\nTcp: 1 -1 12 3 0\n\
                    Udp: InDatagrams NoPorts\nUdp: 5 6\n";
        let netstat = "TcpExt: SyncookiesSent ListenDrops TW\nTcpExt: 0 4 9\n\
                       IpExt: InOctets OutOctets InMcastPkts\nIpExt: 1000 2000 3\n";
        let snmp6 = "Ip6InReceives 7\nIp6InOctets 800\nIcmp6InErrors 1\nUdpLite6InErrors 2\n";
        let mut filter = FieldFilter::new(Regex::new(NETSTAT_FIELDS).unwrap());
        for _ in 0..2 {
            let (mut out, mut offset) = (Vec::new(), 0);
            parse_netstat(snmp, &mut filter, &mut offset, &mut out);
            parse_netstat(netstat, &mut filter, &mut offset, &mut out);
            parse_snmp6(snmp6, &mut filter, &mut offset, &mut out);
            let got: Vec<(&str, f64)> = out.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            assert_eq!(
                got,
                [
                    ("Ip_Forwarding", 1.0),
                    ("Tcp_ActiveOpens", 12.0),
                    ("Tcp_CurrEstab", 3.0),
                    ("Tcp_InErrs", 0.0),
                    ("Udp_InDatagrams", 5.0),
                    ("Udp_NoPorts", 6.0),
                    ("TcpExt_SyncookiesSent", 0.0),
                    ("TcpExt_ListenDrops", 4.0),
                    ("IpExt_InOctets", 1000.0),
                    ("IpExt_OutOctets", 2000.0),
                    ("Ip6_InOctets", 800.0),
                    ("Icmp6_InErrors", 1.0),
                    ("UdpLite6_InErrors", 2.0),
                ]
            );
        }
    }

    /// sockstat's lines become node_exporter's names, with mem in bytes beside mem in pages.
    #[test]
    fn sockstat_names() {
        let mut out = Vec::new();
        parse_sockstat(
            "sockets: used 290\nTCP: inuse 7 orphan 0 tw 1 alloc 9 mem 2\nFRAG: inuse 0 memory 0\n",
            4096,
            &mut out,
        );
        parse_sockstat("TCP6: inuse 3\n", 4096, &mut out);
        let got: Vec<(&str, f64)> = out.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            got,
            [
                ("sockets_used", 290.0),
                ("TCP_inuse", 7.0),
                ("TCP_orphan", 0.0),
                ("TCP_tw", 1.0),
                ("TCP_alloc", 9.0),
                ("TCP_mem", 2.0),
                ("TCP_mem_bytes", 8192.0),
                ("FRAG_inuse", 0.0),
                ("FRAG_memory", 0.0),
                ("TCP6_inuse", 3.0),
            ]
        );
    }

    /// softnet's hex columns, ARP entries per device, and conntrack statistics summed over
    /// CPUs by column name.
    #[test]
    fn softnet_arp_conntrack() {
        assert_eq!(
            parse_softnet("0000002a 00000001 0000000f 0 0\n000000ff 00000000 00000000 0 0\n"),
            [[42, 1, 15], [255, 0, 0]]
        );
        let arp = "IP address       HW type     Flags       HW address            Mask     Device\n\
                   10.0.0.1         0x1         0x2         52:54:00:12:35:02     *        eth0\n\
                   10.0.0.2         0x1         0x2         52:54:00:12:35:03     *        eth0\n\
                   10.1.0.1         0x1         0x2         52:54:00:12:35:04     *        wlan0\n";
        assert_eq!(
            parse_arp(arp, None),
            [("eth0".to_owned(), 2), ("wlan0".to_owned(), 1)]
        );
        let stat = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop error  expect_new expect_create expect_delete search_restart\n\
                    0000000a 00000000 00000001 00000000 00000002 00000003 00000000 00000000 00000004 00000005 00000006 00000007 00000000 00000000 00000000 00000000 00000008\n\
                    0000000a 00000000 00000001 00000000 00000002 00000003 00000000 00000000 00000004 00000005 00000006 00000007 00000000 00000000 00000000 00000000 00000008\n";
        assert_eq!(
            parse_conntrack_stat(stat),
            Some([2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0])
        );
    }

    /// UDP queue bytes are summed over sockets from the hex queue column.
    #[test]
    fn udp_queues() {
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                   0: 00000000:0044 00000000:0000 07 00000010:00000200 00:00000000 00000000     0        0 1 2 0\n\
                   1: 00000000:0045 00000000:0000 07 00000001:00000000 00:00000000 00000000     0        0 1 2 0\n";
        assert_eq!(parse_udp_queues(udp), Some((17.0, 512.0)));
    }
}
