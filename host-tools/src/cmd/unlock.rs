//! `odt unlock`: unlocks an appliance with the customer's unlock code and keeps a session
//! for the next commands.

use clap::Args;
use odt_store::trip::control_api::State;

use crate::control::error::{CtlError, Kind, report};
use crate::control::{Client, Connect, read_unlock_code};

/// `odt unlock`
#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    // Private: a `///` here would become help text; the options document themselves.
    to: Connect,
    /// Print the result as JSON (on failure: {"error": {"kind", "message"}}).
    #[arg(long)]
    pub json: bool,
}

/// Runs `odt unlock`.
pub fn run(a: UnlockArgs) -> anyhow::Result<i32> {
    match unlock(&a) {
        Ok(()) => Ok(0),
        Err(e) => Ok(report(&e, a.json)),
    }
}

fn unlock(a: &UnlockArgs) -> Result<(), CtlError> {
    let client = Client::connect(&a.to)?;
    // Reach it and check its certificate before asking for the code.
    client
        .status(None)
        .map_err(|e| e.context(&format!("unlock of {}", client.addr())))?;
    let Some(code) = read_unlock_code(a.to.code_file.as_deref(), true)? else {
        return Err(CtlError::new(
            Kind::Usage,
            "no unlock code given: type it when asked, pipe it on stdin or pass --code-file FILE",
        ));
    };
    let r = client
        .unlock(&code)
        .map_err(|e| e.context(&format!("unlock of {}", client.addr())))?;
    if a.json {
        let mut v = serde_json::to_value(&r.report).expect("reports serialise");
        v["session_expires_unix"] = r.session.expires_unix.into();
        v["fingerprint"] = client.fingerprint().to_string().into();
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON prints"));
        return Ok(());
    }
    let r = r.report;
    let what = if r.already_unlocked {
        "was already unlocked"
    } else {
        "is unlocked"
    };
    println!(
        "Appliance {} {what}: job {} ({}), device set {}.",
        client.addr(),
        r.job_id,
        r.job_name,
        r.set_id
    );
    match r.state {
        State::Sealed => println!("It is sealed: the NFS export is read-only."),
        _ => println!("The NFS export is read-write: mount it and copy the VM exports."),
    }
    println!(
        "Signed in: `odt status`, `odt bundles` and `odt seal` need no code until the seal or \
         2 hours unused. Page: https://{}/",
        client.addr()
    );
    Ok(())
}
