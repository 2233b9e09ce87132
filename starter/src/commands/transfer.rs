//! `export` and `import` (the work is in [`crate::transfer`]).

use std::time::Duration;

use anyhow::Context;

use super::{Ctx, read_json, read_token};
use crate::cli::{ExportArgs, ImportArgs};

/// `starter export`.
pub async fn export(ctx: &Ctx, a: ExportArgs) -> anyhow::Result<()> {
    let v = crate::transfer::export(
        &ctx.client,
        &ctx.codec,
        &a.workflow_id,
        a.with_tokens,
        !ctx.json,
    )
    .await?;
    let text = serde_json::to_string_pretty(&v)?;
    match a.output {
        Some(p) => {
            write_private(&p, &(text + "\n"))
                .with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!(
                "exported {} workflows to {}",
                v["workflows"].as_array().map_or(0, Vec::len),
                p.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// Writes `text` to `path`, readable and writable by its owner only (mode 0600: an export may hold the
/// root's token, and always holds the entities' data). An existing file is truncated and gets that
/// mode too, before anything is written to it.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// `starter import`.
pub async fn import(ctx: &Ctx, a: ImportArgs) -> anyhow::Result<()> {
    let export = read_json(
        &if a.file == "-" {
            a.file
        } else {
            format!("@{}", a.file)
        },
        "the export",
    )?;
    let token = read_token(a.token_env.as_deref(), false)?;
    let report = crate::transfer::import(
        &ctx.client,
        &ctx.task_queue,
        &export,
        token,
        Duration::from_secs(a.timeout_secs),
        !ctx.json,
    )
    .await?;
    ctx.print(&report, || {
        format!(
            "imported {} workflows under {} ({} needed a merge beyond their parent's slice)",
            report["workflows"], report["root"], report["merged"]
        )
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn exports_are_written_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("starter-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // A new file.
        let new = dir.join("new.json");
        let _ = std::fs::remove_file(&new);
        write_private(&new, "{\"apiToken\": \"t\"}\n").unwrap();
        assert_eq!(mode(&new), 0o600);
        assert_eq!(
            std::fs::read_to_string(&new).unwrap(),
            "{\"apiToken\": \"t\"}\n"
        );
        // An existing, world-readable, longer file: truncated, and its mode tightened.
        let old = dir.join("old.json");
        std::fs::write(&old, "x".repeat(100)).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&old, "{}\n").unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "{}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
