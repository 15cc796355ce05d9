//! proxflow's programs under test, built next to this one.

use std::path::PathBuf;
use std::process::Command;

use proxflow_benches::vendor::process::sibling_binary;
use proxflow_benches::vendor::Result;

/// Makes sure each of `programs` ((package, binary)) is built and current, next to this
/// program. Run by `cargo run`, this asks the same cargo to build them with the same profile
/// (a no-op when they are fresh), so that one command measures the code as it is; run
/// directly, it only checks that they exist and names the command that builds them.
pub fn ensure(programs: &[(&str, &str)]) -> Result<()> {
    if programs.is_empty() {
        return Ok(());
    }
    let profile = profile()?;
    let mut build = Vec::new();
    for (package, _) in programs {
        if !build.contains(&format!("-p {package}")) {
            build.push(format!("-p {package}"));
        }
    }
    for (_, binary) in programs {
        build.push(format!("--bin {binary}"));
    }
    let profile_args: Vec<String> = match profile.as_str() {
        "release" => vec!["--release".into()],
        "debug" => Vec::new(),
        other => vec!["--profile".into(), other.into()],
    };
    let command = format!("cargo build {} {}", profile_args.join(" "), build.join(" "));
    if let Some(cargo) = std::env::var_os("CARGO") {
        eprintln!("building proxflow's contestants: {command}");
        let status = Command::new(cargo)
            .arg("build")
            .args(&profile_args)
            .args(build.iter().flat_map(|arg| arg.split(' ')))
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("`{command}` failed ({status})").into());
        }
    }
    let missing: Vec<PathBuf> = programs
        .iter()
        .map(|(_, binary)| sibling_binary(binary))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|path| !path.is_file())
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        return Err(format!("not built: {} (build them: `{command}`)", names.join(", ")).into());
    }
    Ok(())
}

/// The cargo profile this program was built with, from the name of its directory
/// (`target/release/vendor_compare`).
fn profile() -> Result<String> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str())
        .ok_or("cannot tell this program's build profile from its path")?;
    Ok(dir.to_string())
}
