//! `vitalsctl certs init`: writes a dev PKI (a CA, a server and a client certificate) for
//! `vitalsd --dev` and `vitalsctl --dev`: the flags, the usage, and the output. The
//! certificates are `vitals::pki`'s.

use std::path::PathBuf;

use lexopt::Parser;
use vitals::{client::exit, pki::DevPki};

use crate::flags::{self, Error, Flag, Table, invalid, text};

/// certs' own long flags, for [`flags::normalise`].
pub const FLAGS: Table = &[("out", true), ("san", true)];

/// What `vitalsctl help certs` and `vitalsctl certs --help` print.
pub const USAGE: &str = "\
usage: vitalsctl certs init --out DIR [--san NAME]...

Writes ca.crt, server.crt, server.key, client.crt and client.key (keys mode 0600).

examples:
  vitalsctl certs init --out certs/dev
  vitalsctl certs init --out /tmp/pki --san device.local --san 192.168.1.20";

#[derive(Debug)]
pub struct Args {
    /// The directory the files go to.
    pub out: PathBuf,
    /// More names for the server certificate.
    pub sans: Vec<String>,
}

/// Reads `init` and its flags after the command word; `None` when they ask for the usage.
pub fn parse(mut parser: Parser) -> Result<Option<Args>, Error> {
    let (mut out, mut sans, mut init) = (None, Vec::new(), false);
    while let Some(flag) = flags::next(&mut parser)? {
        if flag.is_help() {
            return Ok(None);
        }
        match &flag {
            Flag::Long(name) if name == "out" => out = Some(PathBuf::from(parser.value()?)),
            Flag::Long(name) if name == "san" => sans.push(text(&mut parser)?),
            Flag::Value(v) if v == "init" && !init => init = true,
            _ => return Err(flag.unexpected("certs")),
        }
    }
    if !init {
        return Err(invalid("certs: the subcommand is `certs init`"));
    }
    Ok(Some(Args {
        out: out.ok_or_else(|| invalid("certs init needs --out DIR"))?,
        sans,
    }))
}

/// Generates and writes the PKI; a failure is exit 1.
pub fn run(args: &Args) -> u8 {
    match DevPki::generate(&args.sans).and_then(|pki| pki.write(&args.out)) {
        Ok(()) => {
            println!(
                "wrote ca.crt server.crt server.key client.crt client.key to {}",
                args.out.display()
            );
            exit::OK
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            exit::ARGS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Command,
        tests::{argv, error},
    };

    /// `certs init` needs `--out`; `--san` repeats; nothing else is taken.
    #[test]
    fn init_needs_out() {
        let Ok(Command::Certs(c)) = crate::parse(argv("certs init --out d --san a -san=b")) else {
            panic!()
        };
        assert_eq!(
            (c.out, c.sans),
            (PathBuf::from("d"), vec!["a".into(), "b".into()])
        );
        assert!(error("certs init").contains("needs --out"));
        assert!(error("certs --out d").contains("`certs init`"));
        assert!(error("certs init --out d --tls").contains("unknown flag --tls"));
    }
}
