//! Prints Switchboard's CRDs as YAML, or writes one file per CRD with `--out-dir DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let out_dir = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--out-dir"), Some(dir)) => Some(PathBuf::from(dir)),
        _ => {
            eprintln!("usage: crdgen [--out-dir DIR]");
            return ExitCode::from(2);
        }
    };
    for (file, crd) in switchboard_crds::all() {
        let yaml = match switchboard_crds::to_yaml(&crd) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("crdgen: serialising {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match &out_dir {
            Some(dir) => {
                let path = dir.join(&file);
                if let Err(e) = std::fs::write(&path, yaml) {
                    eprintln!("crdgen: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("crdgen: wrote {}", path.display());
            }
            None => print!("---\n{yaml}"),
        }
    }
    ExitCode::SUCCESS
}
