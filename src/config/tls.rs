//! `tls = { ca_file, cert_file, key_file, server_name }`, as the network sinks and Key Vault
//! KEKs take it.

use std::path::Path;

use super::files::readable_file;
use super::{raw, resolve, Collector};

/// `tls = { ca_file, cert_file, key_file, server_name }`: files must exist; a client
/// certificate needs its key.
pub(super) fn tls(
    p: &str,
    t: Option<&raw::Tls>,
    base: &Path,
    c: &mut Collector,
) -> logferry_destinations::tls::TlsOptions {
    let Some(t) = t else {
        return Default::default();
    };
    let before = c.list.len();
    let mut file = |name: &str, v: &Option<String>| {
        let path = v.as_deref().map(|f| resolve(base, f));
        if let Some(f) = &path {
            if let Err(e) = readable_file(f) {
                c.add(format!("{p}.tls.{name}"), e);
            }
        }
        path
    };
    let opts = logferry_destinations::tls::TlsOptions {
        ca_file: file("ca_file", &t.ca_file),
        cert_file: file("cert_file", &t.cert_file),
        key_file: file("key_file", &t.key_file),
        server_name: t.server_name.clone(),
    };
    if c.list.len() == before {
        // Readable: now what they hold (certificates that parse and are valid, a key that
        // matches its certificate).
        for (option, problem) in
            logferry_destinations::tls_files::check(&opts, chrono::Utc::now().timestamp())
        {
            c.add(format!("{p}.tls.{option}"), problem);
        }
    }
    if opts.cert_file.is_some() != opts.key_file.is_some() {
        c.add(
            format!("{p}.tls"),
            "cert_file and key_file go together (a client certificate and its key)",
        );
    }
    opts
}
