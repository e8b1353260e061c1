//! Control API bodies from the network: `control::decode_json` for every request body the
//! appliance parses (unlock, sign-in, seal) and for the answers `odt` parses (status, error),
//! and `control::decode_form` for the page's form posts.
//!
//! Contracts: no panic; a body over `MAX_BODY` is refused; a decoded form's code, if any,
//! is one of the `code=` values of the input; a decoded sign-in re-encodes to JSON that
//! decodes to the same fields.

use odt_store::trip::control_api::{
    ErrorBody, MAX_BODY, SealRequest, SignInRequest, StatusReport, UnlockRequest, decode_form,
    decode_json,
};

pub fn run(data: &[u8]) {
    let big = data.len() > MAX_BODY;
    let u = decode_json::<UnlockRequest>(data);
    assert!(!(big && u.is_ok()), "an over-long body was accepted");
    let _ = decode_json::<SealRequest>(data);
    let _ = decode_json::<StatusReport>(data);
    let _ = decode_json::<ErrorBody>(data);
    if let Ok(s) = decode_json::<SignInRequest>(data) {
        let again = serde_json::to_vec(&s).expect("a sign-in re-encodes");
        let back: SignInRequest = decode_json(&again).expect("its encoding decodes");
        assert_eq!(back.challenge, s.challenge);
        assert_eq!(back.mac, s.mac);
        assert_eq!(
            back.code.as_ref().map(|c| c.expose().to_string()),
            s.code.as_ref().map(|c| c.expose().to_string())
        );
    }
    match decode_form(data) {
        Ok(f) => {
            assert!(!big, "an over-long form was accepted");
            if let Some(code) = &f.code {
                let any = form_urlencoded::parse(data).any(|(k, v)| k == "code" && *v == **code);
                assert!(any, "the code is not one of the input's code= values");
            }
        }
        Err(_) => assert!(big, "a form of allowed size was refused"),
    }
}
