#![forbid(unsafe_code)]
//! `haven-certs`, the command line of Haven's development PKI. It only parses arguments and prints what
//! was done; every operation lives in the `haven_certs` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use haven_certs::{CertKind, InitReport, Issued, Layout, Party};
use haven_trust::ids::OrgId;

#[derive(Debug, Parser)]
#[command(name = "haven-certs", version, about = "Haven's development PKI: CA, certificates, CRL, pins, CSR signing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make the network CA, the gateway's and every organization's certificates, the CRL and pins.toml.
    /// A rerun reuses the CA and only adds what is missing.
    Init {
        /// The organization registry.
        #[arg(long, default_value = "policies/orgs.toml")]
        orgs: PathBuf,
        /// The PKI directory.
        #[arg(long)]
        out: PathBuf,
        /// Delete everything init wrote before (including the CA) and start over.
        #[arg(long)]
        force: bool,
        /// A DNS name nodes dial the gateway by, for its TLS certificate (beside localhost and
        /// 127.0.0.1). Repeat for several.
        #[arg(long = "gateway-name", value_name = "NAME")]
        gateway_names: Vec<String>,
        /// The name of a new network CA (its subject's common name), which TLS errors show; default
        /// `Haven network CA` and a random id, so no two networks' CAs look alike.
        #[arg(long, value_name = "NAME")]
        ca_name: Option<String>,
    },
    /// Revoke a certificate: add it to crl.pem and remove its pin.
    Revoke {
        /// The PKI directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        target: RevokeTarget,
        /// Revoke the signing certificate instead of the TLS certificate.
        #[arg(long)]
        signing: bool,
    },
    /// Reissue a certificate with a new key, revoke the old one and update the pins.
    Renew {
        /// The PKI directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Renew the signing certificate instead of the TLS certificate.
        #[arg(long)]
        signing: bool,
        /// With --gateway: a DNS name to add to the gateway's TLS certificate (the names the old one
        /// carried are kept). Repeat for several.
        #[arg(long = "gateway-name", value_name = "NAME", conflicts_with = "signing")]
        gateway_names: Vec<String>,
    },
    /// Sign an organization's certificate request. The certificate gets haven://org/<ID> and the usages
    /// of --kind, whatever the request asked for.
    SignCsr {
        /// The PKI directory.
        #[arg(long)]
        out: PathBuf,
        /// The organization the certificate names.
        #[arg(long)]
        org: OrgId,
        /// The request (PEM).
        #[arg(long)]
        csr: PathBuf,
        /// `tls` or `signing`.
        #[arg(long)]
        kind: CertKind,
        /// Where to write the certificate (must not exist).
        #[arg(long)]
        cert_out: PathBuf,
    },
    /// Put an organization's certificates and keys, the network CA and the gateway's checkpoint
    /// signing certificate where a node reads them (DIR/ca.pem, DIR/gateway/signing.crt,
    /// DIR/orgs/<ID>/...), keys 0600. Every file is checked first; nothing is written if one is wrong.
    Install {
        /// The organization.
        #[arg(long)]
        org: OrgId,
        /// The TLS certificate `sign-csr` issued.
        #[arg(long)]
        tls_cert: PathBuf,
        /// Its key (from `haven-certs csr --kind tls`).
        #[arg(long)]
        tls_key: PathBuf,
        /// The signing certificate `sign-csr` issued.
        #[arg(long)]
        signing_cert: PathBuf,
        /// Its key (from `haven-certs csr --kind signing`).
        #[arg(long)]
        signing_key: PathBuf,
        /// The network CA certificate (ca.pem) the operator sent.
        #[arg(long)]
        ca: PathBuf,
        /// The gateway's checkpoint signing certificate (gateway/signing.crt) the operator sent.
        #[arg(long)]
        gateway_signing_cert: PathBuf,
        /// The node's certificate folder (its --certs).
        #[arg(long)]
        out: PathBuf,
        /// Replace files already there with other content (after a renewal).
        #[arg(long)]
        replace: bool,
    },
    /// Make a new key and a certificate request, as an organization does (its key never leaves it).
    Csr {
        /// The organization making the request.
        #[arg(long)]
        org: OrgId,
        /// `tls` or `signing`.
        #[arg(long)]
        kind: CertKind,
        /// Where to write the new private key (mode 0600, must not exist).
        #[arg(long)]
        key_out: PathBuf,
        /// Where to write the request (must not exist).
        #[arg(long)]
        csr_out: PathBuf,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// The organization whose certificate it is.
    #[arg(long)]
    org: Option<OrgId>,
    /// The gateway's certificate.
    #[arg(long)]
    gateway: bool,
}

impl Target {
    fn party(self) -> Party {
        self.org.map_or(Party::Gateway, Party::Org)
    }
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct RevokeTarget {
    /// The organization whose certificate it is.
    #[arg(long)]
    org: Option<OrgId>,
    /// The gateway's certificate.
    #[arg(long)]
    gateway: bool,
    /// A certificate file (e.g. one issued from a CSR and kept elsewhere).
    #[arg(long)]
    cert: Option<PathBuf>,
}

fn kind(signing: bool) -> CertKind {
    if signing { CertKind::Signing } else { CertKind::Tls }
}

fn print_issued(issued: &Issued) {
    println!(
        "issued   {} {} certificate {}  serial {}  sha256 {}",
        issued.party,
        issued.kind,
        issued.cert_path.display(),
        issued.serial,
        issued.fingerprint
    );
}

fn print_init(report: &InitReport) {
    let layout = &report.layout;
    let verb = if report.ca_created { "created" } else { "reused " };
    println!("{verb}  network CA {} (`{}`)", layout.ca_cert().display(), report.ca_name);
    for issued in &report.issued {
        print_issued(issued);
    }
    if report.issued.is_empty() {
        println!("nothing to issue: every certificate was already there");
    }
    if report.pseudonym_key_created {
        println!("created  pseudonym secret {}", layout.pseudonym_key().display());
    }
    println!("wrote    {}", layout.crl().display());
    println!("wrote    {} (gateway and {} organizations)", layout.pins().display(), report.pins.org.len());
}

fn run(cli: Cli) -> Result<(), haven_certs::CertsError> {
    match cli.command {
        Command::Init { orgs, out, force, gateway_names, ca_name } => {
            let options = haven_certs::InitOptions { force, gateway_names, ca_name };
            let report = haven_certs::init_with(&orgs, &out, &options)?;
            print_init(&report);
        }
        Command::Revoke { out, target, signing } => {
            let entry = match (target.cert, target.org, target.gateway) {
                (Some(cert), _, _) => haven_certs::revoke_cert_file(&out, &cert)?,
                (None, org, _) => {
                    haven_certs::revoke_party(&out, &org.map_or(Party::Gateway, Party::Org), kind(signing))?
                }
            };
            println!(
                "revoked  {} {} certificate  serial {}  sha256 {}",
                entry.party(),
                entry.which,
                entry.serial,
                entry.fingerprint
            );
            let layout = Layout::new(&out);
            println!("wrote    {} and {}", layout.crl().display(), layout.pins().display());
        }
        Command::Renew { out, target, signing, gateway_names } => {
            let issued = haven_certs::renew_with_gateway_names(&out, &target.party(), kind(signing), &gateway_names)?;
            print_issued(&issued);
            let layout = Layout::new(&out);
            println!(
                "revoked  the previous certificate; wrote {} and {}",
                layout.crl().display(),
                layout.pins().display()
            );
        }
        Command::SignCsr { out, org, csr, kind, cert_out } => {
            let issued = haven_certs::sign_csr(&out, &org, &csr, kind, &cert_out)?;
            print_issued(&issued);
            println!("pinned   in {}", Layout::new(&out).pins().display());
        }
        Command::Install {
            org,
            tls_cert,
            tls_key,
            signing_cert,
            signing_key,
            ca,
            gateway_signing_cert,
            out,
            replace,
        } => {
            let files =
                haven_certs::InstallFiles { tls_cert, tls_key, signing_cert, signing_key, ca, gateway_signing_cert };
            let done = haven_certs::install(&org, &files, &out, replace)?;
            for path in &done.written {
                println!("wrote    {}", path.display());
            }
            for path in &done.unchanged {
                println!("kept     {} (already there)", path.display());
            }
            println!("network CA `{}`", done.ca_name);
            println!("pins     tls {}  signing {} (the registry must list these)", done.tls_pin, done.signing_pin);
            println!("next:    haven-node serve --org {org} --certs {} ...", out.display());
        }
        Command::Csr { org, kind, key_out, csr_out } => {
            haven_certs::make_csr(&org, kind, &key_out, &csr_out)?;
            println!("wrote    key {} (keep it; never send it)", key_out.display());
            println!("wrote    request {} (send it to the network operator)", csr_out.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("haven-certs: error: {e}");
            ExitCode::FAILURE
        }
    }
}
