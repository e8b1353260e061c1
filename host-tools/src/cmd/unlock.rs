//! `odt unlock`: unlocks an appliance with the customer's unlock code.

use anyhow::bail;
use clap::Args;
use odt_store::trip::control_api::{Op, Response, SecretText, State};

/// `odt unlock`
#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub to: crate::control_client::Connect,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `odt unlock`.
pub fn run(a: UnlockArgs) -> anyhow::Result<i32> {
    let Some(code) = crate::control_client::read_unlock_code(a.to.code_file.as_deref())? else {
        bail!("no unlock code given: type it on stdin or pass --code-file FILE");
    };
    let op = Op::Unlock {
        code: SecretText::new(code.expose().to_string()),
    };
    drop(code);
    match crate::control_client::call(&a.to.appliance, op, None)? {
        Response::Unlocked(r) => {
            if a.json {
                crate::output::json(&r)?;
            } else {
                let what = if r.already_unlocked {
                    "was already unlocked"
                } else {
                    "is unlocked"
                };
                println!(
                    "Appliance {} {what}: job {} ({}), device set {}.",
                    a.to.appliance, r.job_id, r.job_name, r.set_id
                );
                match r.state {
                    State::Sealed => println!("It is sealed: the NFS export is read-only."),
                    _ => {
                        println!("The NFS export is read-write: mount it and copy the VM exports.")
                    }
                }
            }
            Ok(0)
        }
        Response::Error(e) => bail!(
            "unlock of {} failed ({:?}): {}",
            a.to.appliance,
            e.kind,
            e.message
        ),
        other => bail!("unexpected answer from {}: {other:?}", a.to.appliance),
    }
}
